package oci

import (
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testreg"
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
	img := must(mutate.AppendLayers(empty.Image, tarLayer(t, "random.bin", string(b))))(t)
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
