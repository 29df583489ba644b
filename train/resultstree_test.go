package train

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// TestPostRunResultsSwappedForSymlink is the attack of issue 14 §4: while
// post-run reads the results directory, the train's code (or anyone who can
// write there) keeps swapping a regular result file for a symbolic link to
// a root-only 0600 file of the host with the same size. Post-runs run again
// and again; none may carry the secret into the train: every output is
// decrypted as the researcher and searched for it. A post-run may fail
// (ErrResultsEntry, naming the file), never leak. With os.DirFS (the old
// code), the link is followed between listing and opening.
func TestPostRunResultsSwappedForSymlink(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	master, err := oci.Open(ctx, testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	user, builder, st1 := testutil.Must1(keys.Generate(2048))(t), testutil.Must1(keys.Generate(2048))(t), testutil.Must1(keys.Generate(2048))(t)
	built, err := Build(master, os.DirFS("../testdata/sample/train"), protocol.BuildOptions{
		CreatorID: "researcher-1", CreatorPublic: &user.PublicKey, UserKey: user, BuilderKey: builder,
		Route: []protocol.RouteStation{{ID: "st1", PublicKey: &st1.PublicKey}},
	}, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	in := "oci-archive:" + filepath.Join(dir, "train.tar")
	if _, err := oci.Write(ctx, testutil.Must1(oci.ParseOutputRef(in))(t), built.Image, oci.Options{}); err != nil {
		t.Fatal(err)
	}
	built.Close()

	const size = 4096
	secretMark := []byte("SECRET-host-file|")
	secret := filepath.Join(dir, "secret", "shadow")
	if err := os.MkdirAll(filepath.Dir(secret), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, bytes.Repeat(secretMark, size/len(secretMark)+1)[:size], 0o600); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(dir, "results")
	swap := filepath.Join(dir, "swap") // same file system: rename is atomic
	for _, d := range []string{results, swap} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	regular := bytes.Repeat([]byte("r"), size)
	target := filepath.Join(results, "count.txt")
	if err := os.WriteFile(target, regular, 0o644); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var swaps atomic.Int64
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	defer halt()
	wg.Add(1)
	go func() {
		defer wg.Done()
		lnk, reg := filepath.Join(swap, "lnk"), filepath.Join(swap, "reg")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := os.Symlink(secret, lnk); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(lnk, target); err != nil {
				t.Error(err)
				return
			}
			if err := os.WriteFile(reg, regular, 0o644); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(reg, target); err != nil {
				t.Error(err)
				return
			}
			swaps.Add(2)
		}
	}()

	const runs = 40
	var refused, done int
	for i := range runs {
		out := "oci-archive:" + filepath.Join(dir, "out.tar")
		os.Remove(filepath.Join(dir, "out.tar"))
		_, err := PostRunJob(ctx, in, results, out, protocol.Station{ID: "st1", Key: st1}, Env{Options: Options{TempDir: t.TempDir()}})
		if err != nil {
			if !errors.Is(err, ErrResultsEntry) || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "count.txt") {
				t.Fatalf("run %d: post-run failed with %v; want ErrResultsEntry naming count.txt", i, err)
			}
			refused++
			continue
		}
		done++
		final := filepath.Join(dir, "final")
		os.RemoveAll(final)
		if _, err := DecryptJob(ctx, out, user, final, false, Env{}); err != nil {
			t.Fatalf("run %d: decrypt: %v", i, err)
		}
		ents, err := os.ReadDir(filepath.Join(final, "pht_results"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			got, err := os.ReadFile(filepath.Join(final, "pht_results", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(got, secretMark) {
				t.Fatalf("run %d: the host's secret file was encrypted into the train as %s", i, e.Name())
			}
			if e.Name() != "count.txt" || !bytes.Equal(got, regular) {
				t.Fatalf("run %d: the train holds %s = %q…, want count.txt, the result file", i, e.Name(), got[:min(len(got), 32)])
			}
		}
		if len(ents) != 1 {
			t.Errorf("run %d: the train holds %d result files, want count.txt (a post-run may fail, not drop a result)", i, len(ents))
		}
	}
	halt()
	if swaps.Load() < runs {
		t.Fatalf("only %d swaps during %d post-runs: the attack did not run", swaps.Load(), runs)
	}
	t.Logf("%d post-runs: %d refused, %d without the secret; %d swaps", runs, refused, done, swaps.Load())
}

// TestResultsTreeRefusesLinkedDirectory: a directory swapped for a
// symbolic link to a directory of the host is not followed either.
func TestResultsTreeRefusesLinkedDirectory(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "results")
	host := filepath.Join(dir, "host")
	for _, d := range []string{filepath.Join(results, "sub"), host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(host, "f"), []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(results, "sub", "f"), []byte("result"), 0o600); err != nil {
		t.Fatal(err)
	}
	rt, err := OpenResults(results)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	var walked []string
	if err := protocol.WalkFiles(rt, func(name string, _ int64) error { walked = append(walked, name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(walked) != 1 || walked[0] != "sub/f" {
		t.Fatalf("walk found %v, want [sub/f]", walked)
	}
	// Listed as a directory, then replaced by a link before the open.
	if err := os.Rename(filepath.Join(results, "sub"), filepath.Join(dir, "old-sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(results, "sub")); err != nil {
		t.Fatal(err)
	}
	rt2, err := OpenResults(results)
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if f, err := rt2.Open("sub/f"); err == nil || !errors.Is(err, ErrResultsEntry) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("opening sub/f through a linked directory: %v, want ErrResultsEntry", err)
	}
	if err := protocol.WalkFiles(rt2, func(string, int64) error { return nil }); !errors.Is(err, ErrResultsEntry) || !strings.Contains(err.Error(), "sub") {
		t.Fatalf("walk with a linked directory: %v, want ErrResultsEntry naming sub", err)
	}
}
