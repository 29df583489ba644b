package layer

import (
	"archive/tar"
	"errors"
	"io/fs"
	"testing"
	"testing/fstest"
)

// noOpen is a file system whose files cannot be opened: FindCopy must
// not open a file whose size no seen file has.
type noOpen struct{ fstest.MapFS }

func (n noOpen) Open(name string) (fs.File, error) {
	if name != "." {
		if fi, err := fs.Stat(n.MapFS, name); err == nil && !fi.IsDir() {
			return nil, errors.New("opened " + name)
		}
	}
	return n.MapFS.Open(name)
}

func (n noOpen) ReadDir(name string) ([]fs.DirEntry, error) { return n.MapFS.ReadDir(name) }

// TestFindCopy: a file under the prefixes in a kept layer (a stale result
// a docker commit left in the base) that holds a plaintext is found, by
// content, whatever its name; a same-sized file of other content is not,
// and files of sizes no seen file has are not read.
func TestFindCopy(t *testing.T) {
	base := tarLayer(t, reg("etc/x", "x"), reg("opt/pht_results/stale.csv", "secret result"), reg("opt/pht_train/old.py", "print(0)"))
	top := tarLayer(t, dir("opt/pht_results/"), ent{name: "opt/pht_results/.wh..wh..opq", typ: tar.TypeReg}, reg("opt/pht_results/new.csv", "secret result"),
		reg("opt/train_config.json", "{}"), dir("opt/pht_train/"), ent{name: "opt/pht_train/.wh..wh..opq", typ: tar.TypeReg})
	res, err := Resolve(imageOf(t, base, top), trainPrefixes) // /opt/user_sym_key.key is not settled above: the base is read
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	plain := fstest.MapFS{"a/b.csv": {Data: []byte("other result!")}, "c/copy.csv": {Data: []byte("secret result")}}
	s, name, found, err := res.FindCopy(1, plain)
	if err != nil || !found {
		t.Fatalf("FindCopy: found %v, %v", found, err)
	}
	if s.Layer != 0 || s.Path != "opt/pht_results/stale.csv" || name != "c/copy.csv" {
		t.Errorf("FindCopy: layer %d /%s holds %s, want layer 0 /opt/pht_results/stale.csv holds c/copy.csv", s.Layer, s.Path, name)
	}
	// Above the base only: the top layer's own copy is no leak.
	if _, _, found, err := res.FindCopy(0, plain); found || err != nil {
		t.Errorf("FindCopy below layer 0: found %v, %v", found, err)
	}
	if _, _, found, err := res.FindCopy(1, fstest.MapFS{"x": {Data: []byte("secret resulT")}}); found || err != nil {
		t.Errorf("FindCopy of other content: found %v, %v", found, err)
	}
	if _, _, found, err := res.FindCopy(1, noOpen{fstest.MapFS{"big": {Data: make([]byte, 1000)}}}); found || err != nil {
		t.Errorf("FindCopy with no size in common: found %v, %v", found, err)
	}
	if _, _, found, err := res.FindCopy(1, nil); found || err != nil {
		t.Errorf("FindCopy of nil: found %v, %v", found, err)
	}
}
