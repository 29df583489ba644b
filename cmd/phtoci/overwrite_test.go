package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
)

// TestNeverOverwriteInputCLI: pre-run, post-run and build refuse an output
// that is their input's file (or --master's) under another name (a hard
// link, a symbolic link, the other archive transport): exit 2 naming the
// input, the input unchanged, nothing written.
func TestNeverOverwriteInputCLI(t *testing.T) {
	w := newWorld(t, "s1")
	in := w.path("train.tar")
	w.build(t, in)
	hard, sym := w.path("hard.tar"), w.path("sym.tar")
	testutil.Must(t, os.Link(in, hard))
	testutil.Must(t, os.Symlink(in, sym))
	orig, err := os.ReadFile(in)
	testutil.Must(t, err)
	results := w.results(t, "s1")
	for _, out := range []string{hard, sym, "oci-archive:" + hard, "docker-archive:" + sym} {
		fails(t, 2, nil, append([]string{"pre-run", in, "-o", out}, w.stationArgs("s1")...), "would overwrite an input", in)
		fails(t, 2, nil, append([]string{"post-run", in, "--results", results, "-o", out}, w.stationArgs("s1")...), "would overwrite an input", in)
	}
	if b, err := os.ReadFile(in); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("the input changed (err %v)", err)
	}
	if fi, err := os.Lstat(sym); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symbolic link was replaced: %v %v", fi, err)
	}

	// build: the base image's file under another name.
	master := w.path("master.oci.tar")
	b, err := os.ReadFile("../../testdata/sample/master.oci.tar")
	testutil.Must(t, err)
	testutil.Must(t, os.WriteFile(master, b, 0o644))
	link := w.path("master-link.tar")
	testutil.Must(t, os.Link(master, link))
	fails(t, 2, nil, []string{"build", master, "--files", "../../testdata/sample/train",
		"--query", "../../testdata/sample/query.json", "--creator-id", "researcher-1",
		"--user-key", w.key("researcher"), "--builder-key", w.key("builder"), "-o", "oci-archive:" + link,
		"--route", "s1=" + w.path("s1") + ".pub.pem", "--quiet"}, "would overwrite an input")
	// post-run checking the base against a master: the master's file too.
	fails(t, 2, nil, append([]string{"post-run", in, "--results", results, "--master", master, "-o", link}, w.stationArgs("s1")...), "would overwrite an input", master)
	if got, err := os.ReadFile(master); err != nil || !bytes.Equal(got, b) {
		t.Errorf("the base image changed (err %v)", err)
	}
	ents, err := os.ReadDir(w.dir)
	testutil.Must(t, err)
	for _, e := range ents {
		if e.Name()[0] == '.' {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
