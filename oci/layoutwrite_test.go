package oci

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testutil"
)

// smallImage is an image with one layer holding a file with content c.
func smallImage(t testing.TB, c string) v1.Image {
	t.Helper()
	return testutil.Must1(mutate.AppendLayers(empty.Image, tarLayer(t, "f.txt", c)))(t)
}

// tmpfs mounts a tmpfs of the given size (mount -o size=…) on a new
// directory and unmounts it at the end of the test. It needs root (CI runs
// as root); without root the test fails, it is not skipped.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test mounts a tmpfs to fill the disk and needs root (euid %d)", os.Geteuid())
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -t tmpfs -o size=%s: %v\n%s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file into dir until the file system is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f := testutil.Must1(os.Create(filepath.Join(dir, "filler")))(t)
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

func layoutTags(t *testing.T, dir string) map[string]v1.Hash {
	t.Helper()
	im, err := readLayoutIndex(dir)
	if err != nil {
		t.Fatalf("index.json after the failed write: %v", err)
	}
	tags := map[string]v1.Hash{}
	for _, d := range im.Manifests {
		tags[d.Annotations[refNameAnnotation]] = d.Digest
	}
	return tags
}

// TestLayoutDiskFull: a write into an OCI layout on a full disk fails and
// leaves the previous index.json whole, with every tag; a write into a new
// directory on a full disk leaves no directory behind.
func TestLayoutDiskFull(t *testing.T) {
	mnt := tmpfs(t, "1m")
	dir := filepath.Join(mnt, "layout")
	img := smallImage(t, "base")
	const n = 80 // index.json of about 20 KiB
	for i := range n {
		testutil.Must1(Write(ctx, kindRef("oci", dir, fmt.Sprintf("tag-%03d", i)), img, Options{}))(t)
	}
	fi := testutil.Must1(os.Stat(filepath.Join(dir, "index.json")))(t)
	t.Logf("index.json: %d bytes, %d tags", fi.Size(), n)
	fill(t, mnt)

	// The same image under one more tag: no blob to write, only index.json.
	_, err := Write(ctx, kindRef("oci", dir, "one-more"), img, Options{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing into a full disk: %v, want ENOSPC", err)
	}
	tags := layoutTags(t, dir)
	if len(tags) != n {
		t.Errorf("index.json holds %d tags after the failed write, want %d", len(tags), n)
	}
	// A new image: its blobs do not fit.
	_, err = Write(ctx, kindRef("oci", dir, "other"), smallImage(t, strings.Repeat("x", 64<<10)), Options{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing a new image into a full disk: %v, want ENOSPC", err)
	}
	if tags := layoutTags(t, dir); len(tags) != n {
		t.Errorf("index.json holds %d tags after the failed write, want %d", len(tags), n)
	}
	for _, e := range testutil.Must1(os.ReadDir(dir))(t) {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file %s left in the layout", e.Name())
		}
	}
	open(t, kindRef("oci", dir, "tag-042"), Options{})

	// A new directory.
	fresh := filepath.Join(mnt, "new-layout")
	if _, err := Write(ctx, kindRef("oci", fresh, ""), img, Options{}); err == nil {
		t.Fatal("writing a new layout into a full disk succeeded")
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed write left %s behind (%v)", fresh, err)
	}
}

// TestLayoutConcurrentWriters: three writers adding tags to one layout at
// once keep every tag.
func TestLayoutConcurrentWriters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	const writers, each = 3, 6
	want := map[string]v1.Hash{}
	imgs := map[string]v1.Image{}
	for w := range writers {
		for i := range each {
			tag := fmt.Sprintf("w%d-%d", w, i)
			imgs[tag] = smallImage(t, tag)
			want[tag] = digest(t, imgs[tag])
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				tag := fmt.Sprintf("w%d-%d", w, i)
				if _, err := Write(ctx, kindRef("oci", dir, tag), imgs[tag], Options{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := layoutTags(t, dir)
	for tag, d := range want {
		if got[tag] != d {
			t.Errorf("tag %s: %v, want %s", tag, got[tag], d)
			continue
		}
		img := open(t, kindRef("oci", dir, tag), Options{})
		if err := validImage(img); err != nil {
			t.Errorf("tag %s: %v", tag, err)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d tags, want %d", len(got), len(want))
	}
}
