package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
)

// handLayout writes an OCI layout at dir by hand (what an attacker can
// write): n plain tar layers of one small file each, a config whose
// labels hold cfgPad bytes, a manifest whose annotation holds manPad bytes.
// It returns the layout and, packed, an oci-archive of it.
func handLayout(t *testing.T, n, cfgPad, manPad int) (dir, archive string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "layout")
	testutil.Must1(t, os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755))
	put := func(b []byte) v1.Descriptor {
		sum := sha256.Sum256(b)
		h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
		testutil.Must1(t, os.WriteFile(filepath.Join(dir, "blobs", "sha256", h.Hex), b, 0o644))
		return v1.Descriptor{Digest: h, Size: int64(len(b))}
	}
	cf := v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"}}
	cf.Config.Labels = map[string]string{"pad": strings.Repeat("p", cfgPad)}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for i := range n {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		testutil.Must1(t, tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("l/%d", i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(0, 0)}))
		testutil.Must1(t, tw.Close())
		d := put(buf.Bytes())
		d.MediaType = types.OCIUncompressedLayer
		m.Layers = append(m.Layers, d)
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, d.Digest)
	}
	m.Config = put(testutil.Must1(json.Marshal(cf))(t))
	m.Config.MediaType = types.OCIConfigJSON
	if manPad > 0 {
		m.Annotations = map[string]string{"pad": strings.Repeat("m", manPad)}
	}
	md := put(testutil.Must1(json.Marshal(m))(t))
	md.MediaType = types.OCIManifestSchema1
	md.Annotations = map[string]string{"org.opencontainers.image.ref.name": "t"}
	testutil.Must1(t, os.WriteFile(filepath.Join(dir, "index.json"), testutil.Must1(json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{md}}))(t), 0o644))
	testutil.Must1(t, os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))

	archive = dir + ".tar"
	f := testutil.Must1(os.Create(archive))(t)
	tw := tar.NewWriter(f)
	testutil.Must1(t, tw.AddFS(os.DirFS(dir)))
	testutil.Must1(t, tw.Close())
	testutil.Must1(t, f.Close())
	return dir, archive
}

func wantLimit(t *testing.T, err error, mention ...string) {
	t.Helper()
	if !errors.Is(err, ErrLimit) || !errors.Is(err, layer.ErrLimit) {
		t.Fatalf("got %v, want ErrLimit", err)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

// TestOpenManyLayers: a layout or oci-archive of 5,000 layers is refused
// with the layers limit (before, a layout cost 225 s of CPU: the manifest
// was parsed again for every layer); with the limit raised it opens, and
// every layer is looked up once.
func TestOpenManyLayers(t *testing.T) {
	dir, archive := handLayout(t, 5000, 0, 0)
	for _, ref := range []string{"oci:" + dir + ":t", "oci-archive:" + archive + ":t"} {
		_, err := Open(ctx, parse(t, ref), Options{})
		wantLimit(t, err, "5000 layers", "layers per image, at most 256")
		start := time.Now()
		img := testutil.Must1(Open(ctx, parse(t, ref), Options{Limits: Limits{MaxLayers: 10000}}))(t)
		ls := testutil.Must1(img.Layers())(t)
		for _, l := range ls {
			testutil.Must1(l.DiffID())(t)
			testutil.Must1(l.MediaType())(t)
		}
		res := testutil.Must1(layer.Resolve(img, []string{"opt/train_config.json"}))(t)
		res.Close()
		t.Logf("%s: opened, %d layers listed and resolved in %v", ref[:strings.Index(ref, ":")], len(ls), time.Since(start))
	}
}

// TestOpenManifestAndConfigLimits: a manifest or config blob past its
// limit is refused before it is read, for layouts and oci-archives
// (the attack's shape: just over the 4 MiB default) and with a small
// limit; a docker-archive's manifest.json and config too.
func TestOpenManifestAndConfigLimits(t *testing.T) {
	dir, archive := handLayout(t, 1, 0, 5<<20)
	for _, ref := range []string{"oci:" + dir + ":t", "oci-archive:" + archive + ":t"} {
		_, err := Open(ctx, parse(t, ref), Options{})
		wantLimit(t, err, "manifest blob sha256:", "manifest size, at most 4194304")
		testutil.Must1(Open(ctx, parse(t, ref), Options{Limits: Limits{MaxManifestSize: 6 << 20}}))(t)
	}
	dir, archive = handLayout(t, 1, 5<<20, 0)
	for _, ref := range []string{"oci:" + dir + ":t", "oci-archive:" + archive + ":t"} {
		_, err := Open(ctx, parse(t, ref), Options{})
		wantLimit(t, err, "config blob sha256:", "config size, at most 4194304")
		img := testutil.Must1(Open(ctx, parse(t, ref), Options{Limits: Limits{MaxConfigSize: 6 << 20}}))(t)
		testutil.Must1(img.ConfigFile())(t)
	}
	// docker-archive: manifest.json and config with small limits.
	img := open(t, parse(t, "oci-archive:"+archive+":t"), Options{Limits: Limits{MaxConfigSize: 6 << 20}})
	da := filepath.Join(t.TempDir(), "d.tar")
	testutil.Must1(Write(ctx, parseOut(t, "docker-archive:"+da), img, Options{Quiet: true}))(t)
	_, err := Open(ctx, parse(t, "docker-archive:"+da), Options{})
	wantLimit(t, err, "config size, at most 4194304")
	_, err = Open(ctx, parse(t, "docker-archive:"+da), Options{Limits: Limits{MaxConfigSize: 6 << 20, MaxManifestSize: 100}})
	wantLimit(t, err, "manifest.json is", "manifest size, at most 100")
	_, err = Open(ctx, parse(t, "docker-archive:"+da), Options{Limits: Limits{MaxConfigSize: 6 << 20, MaxLayers: 0}})
	testutil.Must(t, err)

	// docker-archive: layers, counted from manifest.json before any
	// layer is opened.
	_, archive = handLayout(t, 3, 0, 0)
	da = filepath.Join(t.TempDir(), "d3.tar")
	testutil.Must1(Write(ctx, parseOut(t, "docker-archive:"+da), open(t, parse(t, "oci-archive:"+archive+":t"), Options{}), Options{Quiet: true}))(t)
	_, err = Open(ctx, parse(t, "docker-archive:"+da), Options{Limits: Limits{MaxLayers: 2}})
	wantLimit(t, err, "manifest.json lists 3 layers", "layers per image, at most 2")
	open(t, parse(t, "docker-archive:"+da), Options{Limits: Limits{MaxLayers: 3}})
}

// TestRegistryManifestLimit: a registry (here one that answers with a
// 95 MiB manifest, with and without Content-Length) is refused at the
// limit, not read into memory.
func TestRegistryManifestLimit(t *testing.T) {
	const size = 95 << 20
	for _, chunked := range []bool{false, true} {
		var sent int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.URL.Path, "/manifests/") {
				w.WriteHeader(http.StatusOK) // /v2/
				return
			}
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			if !chunked {
				w.Header().Set("Content-Length", fmt.Sprint(size))
			}
			chunk := bytes.Repeat([]byte(" "), 1<<20)
			for range size >> 20 {
				n, err := w.Write(chunk)
				sent += int64(n)
				if err != nil {
					return
				}
			}
		}))
		host := strings.TrimPrefix(srv.URL, "http://")
		_, err := Open(ctx, parse(t, host+"/big/manifest:t"), Options{})
		srv.Close()
		wantLimit(t, err, "manifest", "at most 4194304")
		if sent >= size {
			t.Errorf("chunked %v: the server sent all %d bytes", chunked, sent)
		}
	}
}

// TestLayoutEndlessBlob: a layout whose layer blob is /dev/zero (a
// symlink: an endless body) ends with an error naming the blob, instead
// of being read until killed.
func TestLayoutEndlessBlob(t *testing.T) {
	dir, _ := handLayout(t, 1, 0, 0)
	img := open(t, parse(t, "oci:"+dir+":t"), Options{})
	l := testutil.Must1(img.Layers())(t)[0]
	d := testutil.Must1(l.Digest())(t)
	p := filepath.Join(dir, "blobs", "sha256", d.Hex)
	testutil.Must1(t, os.Remove(p))
	testutil.Must1(t, os.Symlink("/dev/zero", p))
	res, err := layer.Resolve(img, []string{"l"})
	if err == nil {
		res.Close()
	}
	if err == nil || !strings.Contains(err.Error(), d.Hex) {
		t.Fatalf("got %v, want an error naming blob %s", err, d)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("got %v, want ErrCorrupt", err)
	}
}

// endless is an endless body: zeros after an optional prefix.
type endless struct{ prefix []byte }

func (e *endless) Read(p []byte) (int, error) {
	if len(e.prefix) > 0 {
		n := copy(p, e.prefix)
		e.prefix = e.prefix[n:]
		return n, nil
	}
	clear(p)
	return len(p), nil
}

// TestRegistryEndlessLayerBody: a registry (or proxy) that sends a layer
// blob without end, without Content-Length, garbage from the start or
// after the real bytes, stops being read at the size the manifest gives:
// the garbage fails with a digest error, the real bytes followed by
// garbage resolve.
func TestRegistryEndlessLayerBody(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	ref := regRef(t, reg, "endless/train:1")
	src := empty.Image
	src = testutil.Must1(mutate.AppendLayers(src, tarLayer(t, "opt/train_config.json", "{}")))(t)
	testutil.Must1(Write(ctx, ref, src, regOpts(reg)))(t)
	l := testutil.Must1(src.Layers())(t)[0]
	d := testutil.Must1(l.Digest())(t)
	blob := testutil.Must1(io.ReadAll(testutil.Must1(l.Compressed())(t)))(t)
	for _, realFirst := range []bool{false, true} {
		var served atomic.Int64
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
				e := &endless{}
				if realFirst {
					e.prefix = slices.Clone(blob)
				}
				buf := make([]byte, 32<<10)
				for {
					n, _ := e.Read(buf)
					if _, err := w.Write(buf[:n]); err != nil {
						return
					}
					if served.Add(int64(n)) > 1<<30 {
						return // a test guard; the client should have stopped long before
					}
				}
			}
			u := *r.URL
			u.Scheme, u.Host = "http", reg.Host
			req, _ := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
			req.Header = r.Header.Clone()
			resp, err := reg.Transport().RoundTrip(req)
			if err != nil {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			maps.Copy(w.Header(), resp.Header)
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
		}))
		host := strings.TrimPrefix(front.URL, "http://")
		img := open(t, parse(t, host+"/endless/train:1"), Options{})
		res, err := layer.Resolve(img, []string{"opt/train_config.json"})
		front.Close()
		if realFirst {
			if err != nil {
				t.Errorf("real bytes then garbage: %v", err)
			} else {
				res.Close()
			}
		} else if err == nil || !strings.Contains(err.Error(), "verifying") {
			t.Errorf("endless garbage: got %v, want a digest error", err)
		}
		if served.Load() > 1<<30 {
			t.Errorf("realFirst %v: the client read more than 1 GiB of an endless body", realFirst)
		}
	}
}
