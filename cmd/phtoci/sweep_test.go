package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testutil"
)

// TestSweepIgnoresPlantedEntries: FIFOs named like phtoci's temporary
// entries, in TMPDIR (phtoci-resolve-x) and beside the output
// (.phtoci-layer-x), as any local user can make them, neither hang a
// pre-run or post-run (the sweep used to open them, blocking forever) nor
// get removed; neither does another user's file or a symlink. The
// timeout only fails the test.
func TestSweepIgnoresPlantedEntries(t *testing.T) {
	w := newWorld(t, "st1", "st2")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	tmp, out := w.path("tmp"), w.path("out")
	for _, d := range []string{tmp, out} {
		testutil.Must(t, os.MkdirAll(d, 0o1777))
		testutil.Must(t, os.Chmod(d, 0o1777)) // like /tmp: anyone may plant
	}
	victim := w.path("victim")
	testutil.Must(t, os.WriteFile(victim, []byte("keep"), 0o600))
	var planted []string
	for _, d := range []string{tmp, out} {
		for _, prefix := range []string{"phtoci-resolve-", ".phtoci-layer-"} {
			fifo := filepath.Join(d, prefix+"fifo")
			testutil.Must(t, syscall.Mkfifo(fifo, 0o666))
			link := filepath.Join(d, prefix+"link")
			testutil.Must(t, os.Symlink(victim, link))
			planted = append(planted, fifo, link)
			if os.Geteuid() == 0 {
				other := filepath.Join(d, prefix+"other")
				testutil.Must(t, os.WriteFile(other, []byte("theirs"), 0o644))
				testutil.Must(t, os.Lchown(other, 65534, 65534))
				planted = append(planted, other)
			}
		}
	}
	run := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, phtociBin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + tmp}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("%s hung (killed after 2 min) on the planted entries; stderr %q", args[0], stderr.String())
		}
		if err != nil {
			t.Fatalf("%s: %v; stderr %q", args[0], err, stderr.String())
		}
	}
	posted := "oci-archive:" + filepath.Join(out, "posted.tar")
	run(append([]string{"post-run", train, "--results", w.results(t, "st1"), "-o", posted, "--cache", "none"}, w.stationArgs("st1")...)...)
	run(append([]string{"pre-run", posted, "-o", "oci-archive:" + filepath.Join(out, "dec.tar"), "--cache", "none"}, w.stationArgs("st2")...)...)
	for _, p := range append(planted, victim) {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}
