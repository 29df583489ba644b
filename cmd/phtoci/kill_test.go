package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/internal/units"
)

// killWorld is a built train (oci-archive), a results directory of 256
// MiB, an output directory and a private TMPDIR for the binary.
type killWorld struct {
	*world
	train, results, out, tmp string
	marker                   []byte            // in every results file: plaintext
	trainPlain               map[string][]byte // the train files' plaintext
}

func newKillWorld(t *testing.T) *killWorld {
	t.Helper()
	w := newWorld(t, "st1")
	k := &killWorld{world: w, train: "oci-archive:" + w.path("train.tar"), results: w.path("results"),
		out: w.path("out"), tmp: w.path("tmp"), marker: []byte("plaintext-result-kill|")}
	w.build(t, k.train)
	k.trainPlain = map[string][]byte{}
	for _, n := range []string{"entrypoint.py"} {
		k.trainPlain[n] = testutil.Must1(os.ReadFile(filepath.Join("../../testdata/sample/train", n)))(t)
	}
	testutil.Must(t, os.MkdirAll(k.results, 0o755))
	testutil.Must(t, os.MkdirAll(k.out, 0o755))
	testutil.Must(t, os.MkdirAll(k.tmp, 0o755))
	chunk := bytes.Repeat(k.marker, (64<<20)/len(k.marker))
	for _, n := range []string{"a.bin", "b.bin", "c.bin", "d.bin"} {
		testutil.Must(t, os.WriteFile(filepath.Join(k.results, n), chunk, 0o644))
	}
	return k
}

func (k *killWorld) postRun(t *testing.T, extra ...string) *exec.Cmd {
	t.Helper()
	args := append([]string{"post-run", k.train, "--results", k.results, "-o", "oci-archive:" + filepath.Join(k.out, "out.tar")}, k.stationArgs("st1")...)
	args = append(args, extra...)
	cmd := exec.Command(phtociBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + k.tmp}
	return cmd
}

// startWriting starts post-run and returns once its layer file in the
// output directory holds more than 8 MiB (the layer is being written).
func (k *killWorld) startWriting(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	testutil.Must(t, cmd.Start())
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if fs, _ := filepath.Glob(filepath.Join(k.out, ".phtoci-layer-*")); len(fs) == 1 {
			if fi, err := os.Stat(fs[0]); err == nil && fi.Size() > 8<<20 {
				return
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatal("post-run never started writing its layer file")
}

// noPlaintext fails if any file under dir holds the results' plaintext.
func (k *killWorld) noPlaintext(t *testing.T, dir string) {
	t.Helper()
	testutil.Must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, k.marker) {
			t.Errorf("%s holds plaintext results", p)
		}
		for name, plain := range k.trainPlain {
			if bytes.Contains(b, plain) {
				t.Errorf("%s holds the plaintext of train file %s", p, name)
			}
		}
		return nil
	}))
}

func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, e := range testutil.Must1(os.ReadDir(dir))(t) {
		if strings.HasPrefix(e.Name(), ".phtoci-") || strings.HasPrefix(e.Name(), "phtoci-") || strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestKillMidPostRun: SIGKILL while post-run writes its layer leaves no
// plaintext in TMPDIR; the layer file it left in the output directory is
// removed by the next run, which succeeds.
func TestKillMidPostRun(t *testing.T) {
	k := newKillWorld(t)
	cmd := k.postRun(t)
	k.startWriting(t, cmd)
	testutil.Must(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	k.noPlaintext(t, k.tmp)
	stale := testutil.Must1(filepath.Glob(filepath.Join(k.out, ".phtoci-layer-*")))(t)
	t.Logf("after SIGKILL: output dir %v, TMPDIR %v", leftovers(t, k.out), leftovers(t, k.tmp))
	if len(stale) != 1 {
		t.Fatalf("layer files after the kill: %v, want the one being written", stale)
	}

	fi, err := os.Stat(stale[0])
	testutil.Must(t, err)
	cmd = k.postRun(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("post-run after the kill: %v\n%s", err, out)
	}
	// It says how much it removed (issue 30), in one line.
	if want := "removed 1 leftover temporary file of stopped runs (" + units.Bytes(fi.Size()) + ")"; strings.Count(string(out), want) != 1 {
		t.Errorf("post-run after the kill printed %q, want one line %q", out, want)
	}
	if _, err := os.Stat(stale[0]); !os.IsNotExist(err) {
		t.Errorf("the next run left the killed run's layer file %s (%v)", stale[0], err)
	}
	if l := leftovers(t, k.out); len(l) != 0 {
		t.Errorf("output directory holds %v after a good run", l)
	}
	if l := leftovers(t, k.tmp); len(l) != 0 {
		t.Errorf("TMPDIR holds %v after a good run", l)
	}
	ok(t, "verify", "oci-archive:"+filepath.Join(k.out, "out.tar"), "--quiet")
}

// TestSignalStopsStep: SIGTERM (and SIGINT twice) while post-run writes
// its layer stops it, exit 3, with its temporary files removed and no
// output; the time from the signal to the exit is logged (the bound is
// only a hang detector).
func TestSignalStopsStep(t *testing.T) {
	k := newKillWorld(t)
	for _, c := range []struct {
		name string
		sigs []os.Signal
	}{
		{"SIGTERM", []os.Signal{syscall.SIGTERM}},
		{"SIGINT twice", []os.Signal{os.Interrupt, os.Interrupt}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := k.postRun(t, "--json")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			k.startWriting(t, cmd)
			start := time.Now()
			for i, s := range c.sigs {
				if i > 0 {
					time.Sleep(50 * time.Millisecond) // two signals sent at once are delivered as one
				}
				testutil.Must(t, cmd.Process.Signal(s))
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			var err error
			select {
			case err = <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Fatalf("still running 10 s after %v", c.sigs)
			}
			t.Logf("%s: exited %v after the signal", c.name, time.Since(start).Round(time.Millisecond))
			if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != exitIO {
				t.Errorf("exit: %v, want code %d", err, exitIO)
			}
			if !strings.Contains(stderr.String(), "interrupted by SIG") {
				t.Errorf("stderr %q does not say it was interrupted", stderr.String())
			}
			var out struct {
				OK       bool
				Error    string
				ExitCode int
			}
			readJSON(t, stdout.String(), &out)
			if out.OK || out.ExitCode != exitIO || !strings.Contains(out.Error, "interrupted by SIG") {
				t.Errorf("--json output %q: want ok false, exit code 3 and the interruption", stdout.String())
			}
			if l := leftovers(t, k.out); len(l) != 0 {
				t.Errorf("output directory holds %v after the signal", l)
			}
			if l := leftovers(t, k.tmp); len(l) != 0 {
				t.Errorf("TMPDIR holds %v after the signal", l)
			}
			if exists(filepath.Join(k.out, "out.tar")) {
				t.Errorf("an interrupted post-run wrote its output")
			}
		})
	}
}

// TestConcurrentPostRunsIntoOneLayout: three post-run processes writing
// to three tags of one OCI layout at once all succeed and all three tags
// are there, each a verified train.
func TestConcurrentPostRunsIntoOneLayout(t *testing.T) {
	w := newWorld(t, "st1")
	train := "oci-archive:" + w.path("train.tar")
	w.build(t, train)
	results := w.results(t, "st1")
	dir := w.path("shared")
	cmds := make([]*exec.Cmd, 3)
	outs := make([]bytes.Buffer, 3)
	for i := range cmds {
		args := append([]string{"post-run", train, "--results", results, "-o", "oci:" + dir + ":tag" + string(rune('a'+i))}, w.stationArgs("st1")...)
		cmds[i] = exec.Command(phtociBin, args...)
		cmds[i].Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		testutil.Must(t, cmds[i].Start())
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("writer %d: %v\n%s", i, err, outs[i].String())
		}
	}
	for i := range cmds {
		ok(t, "verify", "oci:"+dir+":tag"+string(rune('a'+i)), "--quiet")
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("layout holds %v", l)
	}
}
