package oci

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestRegistryFaults: pushes and pulls through a fault proxy in front of
// the real registry. A layer upload of known size (a file, not a stream)
// dropped once is started over; a manifest whose body stalls is read
// again; a stall on every try fails with ErrStall naming the registry.
func TestRegistryFaults(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	p := faultproxy.Start(t, reg.URL())
	b := make([]byte, 3<<20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	img := testutil.Must1(mutate.AppendLayers(empty.Image, tarLayer(t, "random.bin", string(b))))(t)
	via := func(tag string) Ref { return parse(t, "docker://"+p.Host+"/faults/img:"+tag) }
	opts := Options{StallTimeout: 500 * time.Millisecond}

	t.Run("file layer upload dropped once", func(t *testing.T) {
		i := p.Add(faultproxy.Fault{Kind: faultproxy.Drop, Method: http.MethodPatch, OnRequest: true, Nth: 1, Bytes: 1 << 20})
		defer p.Clear()
		if _, err := Write(ctx, via("v1"), img, opts); err != nil {
			t.Fatal(err)
		}
		if p.Fired(i) != 1 {
			t.Fatalf("fault fired %d times", p.Fired(i))
		}
		got := open(t, regRef(t, reg, "faults/img:v1"), Options{})
		if digest(t, got) != digest(t, img) {
			t.Fatalf("pushed %s, want %s", digest(t, got), digest(t, img))
		}
		if err := validImage(got); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("manifest stalls once", func(t *testing.T) {
		i := p.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet, Path: "/manifests/", Nth: 1})
		defer p.Clear()
		got, err := Open(ctx, via("v1"), opts)
		if err != nil {
			t.Fatal(err)
		}
		if p.Fired(i) != 1 || digest(t, got) != digest(t, img) {
			t.Fatalf("fault fired %d times, digest %s", p.Fired(i), digest(t, got))
		}
	})

	t.Run("manifest stalls every time", func(t *testing.T) {
		p.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet, Path: "/manifests/"})
		p.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodHead, Path: "/manifests/"})
		defer p.Clear()
		_, err := Open(ctx, via("v1"), opts)
		if !errors.Is(err, ErrStall) || !errors.Is(err, ErrTransfer) || !strings.Contains(err.Error(), "registry "+p.Host) || !strings.Contains(err.Error(), "manifest faults/img:v1") {
			t.Fatalf("got %v, want ErrStall naming the registry and the manifest", err)
		}
	})
}

// TestStreamUploadSpoolDiskFull: a streamed layer upload whose spool does
// not fit in TempDir (a 1 MiB tmpfs) still succeeds when nothing goes
// wrong; when the upload then drops, the error says it was not sent again.
func TestStreamUploadSpoolDiskFull(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	p := faultproxy.Start(t, reg.URL())
	tmp := tmpfs(t, "1m")
	b := make([]byte, 3<<20)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	tarred := testutil.Must1(tarLayer(t, "random.bin", string(b)).Uncompressed())(t)
	defer tarred.Close()
	raw := testutil.Must1(io.ReadAll(tarred))(t)
	streamed := func() v1.Image {
		sl := stream.NewLayer(io.NopCloser(bytes.NewReader(raw)), stream.WithCompressionLevel(0))
		return testutil.Must1(mutate.AppendLayers(empty.Image, sl))(t)
	}
	opts := Options{TempDir: tmp, StallTimeout: 5 * time.Second}

	if _, err := Write(ctx, parse(t, "docker://"+p.Host+"/faults/stream:ok"), streamed(), opts); err != nil {
		t.Fatalf("upload with a full spool disk: %v", err)
	}
	if err := validImage(open(t, regRef(t, reg, "faults/stream:ok"), Options{})); err != nil {
		t.Fatal(err)
	}
	if ents := testutil.Must1(os.ReadDir(tmp))(t); len(ents) != 0 {
		t.Errorf("TempDir holds %v", ents)
	}

	p.Add(faultproxy.Fault{Kind: faultproxy.Drop, Method: http.MethodPatch, OnRequest: true, Nth: 1, Bytes: 2 << 20})
	_, err := Write(ctx, parse(t, "docker://"+p.Host+"/faults/stream:dropped"), streamed(), opts)
	if !errors.Is(err, ErrTransfer) || !strings.Contains(err.Error(), "not sent again") || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("got %v, want ErrTransfer saying the upload was not sent again for want of spool space", err)
	}
	// The message names the repository, not the upload URL and its state.
	if msg := err.Error(); strings.Contains(msg, "_state=") || strings.Contains(msg, "/v2/") || !strings.Contains(msg, "blob upload to faults/stream") {
		t.Errorf("message %q shows the upload URL or does not name the repository", msg)
	}
}
