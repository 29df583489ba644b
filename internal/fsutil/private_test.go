package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckPrivateDir(t *testing.T) {
	root := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	private := mk("private", 0o700)
	open := mk("open", 0o777)
	group := mk("group", 0o770)
	link := filepath.Join(root, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		dir  string
		want error
	}{
		{"private", private, nil},
		{"world-writable", open, ErrNotPrivate},
		{"group-writable", group, ErrNotPrivate},
		{"symlink", link, ErrNotPrivate},
		{"file", file, ErrNotPrivate},
		{"missing", filepath.Join(root, "none"), fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPrivateDir(tc.dir)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckPrivateDir(%s) = %v, want nil", tc.dir, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckPrivateDir(%s) = %v, want %v", tc.dir, err, tc.want)
			}
		})
	}
}
