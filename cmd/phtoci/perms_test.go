package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
)

// phtociUmask runs the binary as phtoci does, under umask mask.
func phtociUmask(t *testing.T, mask string, args ...string) result {
	t.Helper()
	sh := []string{"-c", `umask "$0"; exec "$@"`, mask, phtociBin}
	r := runCmd(t, "sh", append(sh, args...)...)
	if r.code != 0 {
		t.Fatalf("umask %s; phtoci %s: exit %d\nstderr: %s", mask, strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// mode is p's permission bits.
func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(p)
	testutil.Must(t, err)
	return fi.Mode().Perm()
}

func wantMode(t *testing.T, p string, want fs.FileMode) {
	t.Helper()
	if got := mode(t, p); got != want {
		t.Errorf("%s: mode %04o, want %04o", p, got, want)
	}
}

// TestPlaintextOutputsPrivate (issue 14 §5): whatever the umask (022 and
// 000), what holds plaintext is 0600 (directories 0700): pre-run's
// docker-archive, oci-archive and new OCI layout outputs, the blobs it
// adds to an existing layout, --results-dir, decrypt --out. Encrypted
// outputs (post-run) follow the umask.
func TestPlaintextOutputsPrivate(t *testing.T) {
	for _, mask := range []string{"022", "000"} {
		t.Run("umask "+mask, func(t *testing.T) {
			w := newWorld(t, "st-a")
			pub := fs.FileMode(0o644)
			if mask == "000" {
				pub = 0o666
			}
			in := w.path("train.tar")
			w.build(t, in)
			layout := w.path("layout")
			phtociUmask(t, mask, "build", "../../testdata/sample/master.oci.tar", "--files", "../../testdata/sample/train",
				"--query", "../../testdata/sample/query.json", "--creator-id", "researcher-1",
				"--user-key", w.key("researcher"), "--builder-key", w.key("builder"), "--route", "st-a="+w.path("st-a")+".pub.pem",
				"-o", "oci:"+layout+":t", "--quiet")
			before := map[string]fs.FileMode{}
			ents, err := os.ReadDir(filepath.Join(layout, "blobs", "sha256"))
			testutil.Must(t, err)
			for _, e := range ents {
				before[e.Name()] = mode(t, filepath.Join(layout, "blobs", "sha256", e.Name()))
			}

			st := w.stationArgs("st-a")
			phtociUmask(t, mask, append([]string{"pre-run", in, "-o", w.path("train-decrypted.tar")}, st...)...) // the default is TestPreRunArchiveDefaultInCurrentDir
			wantMode(t, w.path("train-decrypted.tar"), 0o600)
			phtociUmask(t, mask, append([]string{"pre-run", in, "-o", "oci-archive:" + w.path("dec.oci.tar"), "--results-dir", w.path("results")}, st...)...)
			wantMode(t, w.path("dec.oci.tar"), 0o600)
			wantMode(t, w.path("results"), 0o700)
			phtociUmask(t, mask, append([]string{"pre-run", in, "-o", "oci:" + w.path("declayout")}, st...)...)
			wantMode(t, w.path("declayout"), 0o700)
			// Into the existing layout (the default output of a layout
			// input): the blobs pre-run adds are 0600, the others as they were.
			phtociUmask(t, mask, append([]string{"pre-run", "oci:" + layout + ":t"}, st...)...)
			ents, err = os.ReadDir(filepath.Join(layout, "blobs", "sha256"))
			testutil.Must(t, err)
			added := 0
			for _, e := range ents {
				p := filepath.Join(layout, "blobs", "sha256", e.Name())
				if m, ok := before[e.Name()]; ok {
					wantMode(t, p, m) // not pre-run's
					continue
				}
				added++
				wantMode(t, p, 0o600)
			}
			if added < 3 {
				t.Errorf("pre-run added %d blobs to the layout, want layer, config and manifest", added)
			}

			// post-run: encrypted, follows the umask.
			phtociUmask(t, mask, append([]string{"post-run", in, "--results", w.path("results"), "-o", "oci-archive:" + w.path("post.tar")}, st...)...)
			wantMode(t, w.path("post.tar"), pub)
			phtociUmask(t, mask, append([]string{"post-run", in, "--results", w.path("results"), "-o", w.path("post-docker.tar")}, st...)...)
			wantMode(t, w.path("post-docker.tar"), pub)

			out := w.path("final")
			phtociUmask(t, mask, "decrypt", w.path("post.tar"), "--key", w.key("researcher"), "--out", out, "--train", "--quiet")
			files := 0
			testutil.Must(t, filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() {
					wantMode(t, p, 0o700)
				} else {
					files++
					wantMode(t, p, 0o600)
				}
				return nil
			}))
			if files < 2 {
				t.Errorf("decrypt wrote %d files, want the train files", files)
			}
		})
	}
}

// TestPrivateKeyModeWarning: a station key readable by others works, with
// a warning on stderr naming the file and the fix; a 0600 key gets none.
func TestPrivateKeyModeWarning(t *testing.T) {
	w := newWorld(t, "st-a")
	in := w.path("train.tar")
	w.build(t, in)
	key := w.key("st-a")
	r := phtoci(t, "", nil, "verify", in, "--station", "st-a", "--key", key, "--quiet")
	if r.code != 0 || strings.Contains(r.stderr, "warning") {
		t.Fatalf("0600 key: exit %d, stderr %q; want 0 and no warning", r.code, r.stderr)
	}
	testutil.Must(t, os.Chmod(key, 0o644))
	r = phtoci(t, "", nil, "verify", in, "--station", "st-a", "--key", key, "--quiet")
	if r.code != 0 {
		t.Fatalf("0644 key: exit %d: %s", r.code, r.stderr)
	}
	for _, m := range []string{"warning", key, "0644", "chmod 600 " + key} {
		if !strings.Contains(r.stderr, m) {
			t.Errorf("0644 key: stderr %q does not mention %q", r.stderr, m)
		}
	}
}

// runCmd runs name with the environment phtoci() gives the binary.
func runCmd(t *testing.T, name string, args ...string) result {
	t.Helper()
	return runCmdIn(t, "", name, args...)
}

// runCmdIn is runCmd in the working directory dir ("" = the test's).
func runCmdIn(t *testing.T, dir, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + os.TempDir()}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s %v: %v", name, args, err)
	}
	return result{code, so.String(), se.String()}
}
