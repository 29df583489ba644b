package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testutil"
)

// TestSignalLeavesNoPlaintext interrupts every command that writes
// plaintext (pre-run --results-dir, decrypt --out, pre-run to a file) with
// SIGINT, SIGTERM and SIGINT twice (the second one stops the command at
// once, through internal/atexit), as soon as its temporary output appears
// and again once it holds plaintext, and then scans TMPDIR and the output
// directory: no temporary file or directory and no plaintext may be left.
// The time from the signal to the exit is logged (the README's bound).
// Last, a SIGKILL, whose leftovers the next run beside them removes.
func TestSignalLeavesNoPlaintext(t *testing.T) {
	w := newWorld(t, "st1", "st2")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	marker := []byte("plaintext-result-signal|")
	results := w.path("results")
	testutil.Must(t, os.MkdirAll(results, 0o755))
	chunk := bytes.Repeat(marker, (48<<20)/len(marker))
	for _, n := range []string{"a.bin", "b.bin", "c.bin"} {
		testutil.Must(t, os.WriteFile(filepath.Join(results, n), chunk, 0o644))
	}
	posted := "oci-archive:" + w.path("posted.tar")
	ok(t, append([]string{"post-run", train, "--results", results, "-o", posted, "--cache", "none"}, w.stationArgs("st1")...)...)
	trainPlain := testutil.Must1(os.ReadFile("../../testdata/sample/train/entrypoint.py"))(t)

	type command struct {
		name string
		args func(out string) []string
		temp string // the temporary output's prefix in the output directory
		done string // the output, which must not appear
	}
	commands := []command{
		{"pre-run --results-dir", func(out string) []string {
			return append([]string{"pre-run", posted, "-o", "oci-archive:" + filepath.Join(out, "dec.tar"),
				"--results-dir", filepath.Join(out, "prev"), "--cache", "none"}, w.stationArgs("st2")...)
		}, ".phtoci-results-", "prev"},
		{"decrypt --out", func(out string) []string {
			return []string{"decrypt", posted, "--key", w.key("researcher"), "--out", filepath.Join(out, "final"),
				"--train", "--quiet", "--cache", "none"}
		}, ".phtoci-decrypt-", "final"},
		{"pre-run to a file", func(out string) []string {
			return append([]string{"pre-run", posted, "-o", "oci-archive:" + filepath.Join(out, "dec.tar"),
				"--cache", "none"}, w.stationArgs("st2")...)
		}, ".phtoci-layer-", "dec.tar"},
	}
	signals := []struct {
		name string
		sigs []os.Signal
	}{
		{"SIGINT", []os.Signal{os.Interrupt}},
		{"SIGTERM", []os.Signal{syscall.SIGTERM}},
		{"SIGINT twice", []os.Signal{os.Interrupt, os.Interrupt}},
	}
	points := []struct {
		name string
		min  int64 // bytes the temporary output holds
	}{{"at start", 0}, {"mid-write", 16 << 20}}
	for _, c := range commands {
		for _, p := range points {
			for _, s := range signals {
				t.Run(fmt.Sprintf("%s/%s/%s", c.name, p.name, s.name), func(t *testing.T) {
					out, tmp := t.TempDir(), t.TempDir()
					cmd := exec.Command(phtociBin, c.args(out)...)
					cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + tmp}
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					testutil.Must(t, cmd.Start())
					exited := make(chan error, 1)
					go func() { exited <- cmd.Wait() }()
					if !awaitTemp(out, c.temp, p.min, exited) {
						t.Fatalf("%s finished before its temporary output held %d bytes; stderr %q", c.name, p.min, stderr.String())
					}
					start := time.Now()
					for i, sig := range s.sigs {
						if i > 0 {
							time.Sleep(50 * time.Millisecond) // two signals sent at once are delivered as one
						}
						if err := cmd.Process.Signal(sig); err != nil && !(i > 0 && errors.Is(err, os.ErrProcessDone)) {
							t.Fatal(err)
						}
					}
					var err error
					select {
					case err = <-exited:
					case <-time.After(20 * time.Second):
						cmd.Process.Kill()
						<-exited
						t.Fatalf("still running 20 s after %v", s.sigs)
					}
					t.Logf("exited %v after the signal", time.Since(start).Round(time.Millisecond))
					if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != exitIO || !strings.Contains(stderr.String(), "interrupted by SIG") {
						t.Errorf("exit %v, stderr %q: want exit %d, interrupted", err, stderr.String(), exitIO)
					}
					for _, d := range []string{out, tmp} {
						if l := leftovers(t, d); len(l) != 0 {
							t.Errorf("%s holds %v after the signal", d, l)
						}
						scanPlaintext(t, d, marker, trainPlain)
					}
					if exists(filepath.Join(out, c.done)) {
						t.Errorf("the interrupted command wrote its output %s", c.done)
					}
				})
			}
		}
	}

	// SIGKILL cannot be caught: the private directory stays, locked by a
	// dead process, until the next pre-run beside it removes it and says so.
	t.Run("pre-run --results-dir/SIGKILL, then the next run", func(t *testing.T) {
		out, tmp := t.TempDir(), t.TempDir()
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + tmp}
		cmd := exec.Command(phtociBin, commands[0].args(out)...)
		cmd.Env = env
		testutil.Must(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if !awaitTemp(out, commands[0].temp, 16<<20, exited) {
			t.Fatal("pre-run finished before its results directory held 16 MiB")
		}
		testutil.Must(t, cmd.Process.Signal(syscall.SIGKILL))
		<-exited
		left := leftovers(t, out)
		t.Logf("after SIGKILL: %v", left)
		if len(left) == 0 {
			t.Fatal("nothing left after SIGKILL: the test killed nothing")
		}
		next := append([]string{"pre-run", posted, "-o", "oci-archive:" + filepath.Join(out, "dec2.tar"),
			"--results-dir", filepath.Join(out, "prev2"), "--cache", "none"}, w.stationArgs("st2")...)
		cmd = exec.Command(phtociBin, next...)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the next pre-run: %v\n%s", err, b)
		}
		if !strings.Contains(string(b), "leftover temporary file") {
			t.Errorf("the next pre-run did not say what it removed: %q", b)
		}
		if l := leftovers(t, out); len(l) != 0 {
			t.Errorf("after the next run, %s holds %v", out, l)
		}
		if exists(filepath.Join(out, "prev")) {
			t.Error("the killed pre-run's results directory appeared")
		}
	})
}

// awaitTemp waits until dir holds an entry "prefix*" with at least min
// bytes in regular files, or the command exits (false).
func awaitTemp(dir, prefix string, min int64, exited chan error) bool {
	for {
		select {
		case err := <-exited:
			exited <- err
			return false
		default:
		}
		ms, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
		for _, m := range ms {
			var n int64
			filepath.WalkDir(m, func(_ string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if fi, err := d.Info(); err == nil {
						n += fi.Size()
					}
				}
				return nil
			})
			if n >= min {
				return true
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// scanPlaintext fails if a file under dir holds the results' marker or a
// train file's plaintext.
func scanPlaintext(t *testing.T, dir string, marker, trainPlain []byte) {
	t.Helper()
	testutil.Must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, marker) || bytes.Contains(b, trainPlain) {
			t.Errorf("%s holds plaintext", p)
		}
		return nil
	}))
}
