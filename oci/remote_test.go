package oci

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// flaky is a RoundTripper in front of the real registry that answers the
// first 503s requests for blobs with 503 and then drops the connection of
// the next drops requests, before passing requests on.
type flaky struct {
	next        http.RoundTripper
	mu          sync.Mutex
	fail503     int
	drops       int
	seen503     int
	seenDropped int
}

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Method == http.MethodGet {
		f.mu.Lock()
		switch {
		case f.fail503 > 0:
			f.fail503--
			f.seen503++
			f.mu.Unlock()
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Body: io.NopCloser(strings.NewReader("busy")), Header: http.Header{}, Request: r, ProtoMajor: 1, ProtoMinor: 1}, nil
		case f.drops > 0:
			f.drops--
			f.seenDropped++
			f.mu.Unlock()
			return nil, io.ErrUnexpectedEOF // a dropped connection
		}
		f.mu.Unlock()
	}
	return f.next.RoundTrip(r)
}

// TestRetries: blob reads that first get 503 twice and then a dropped
// connection succeed through the retry with backoff.
func TestRetries(t *testing.T) {
	// The production backoff waits 1 s, 3 s, 9 s; keep the schedule's shape
	// but make it quick for the test.
	saved := retryBackoff
	retryBackoff = remote.Backoff{Duration: 20 * time.Millisecond, Factor: 3, Jitter: 0.1, Steps: 4}
	t.Cleanup(func() { retryBackoff = saved })
	reg := testreg.Start(t, testreg.Options{})
	img := testutil.Must1(random.Image(1<<16, 1))(t)
	ref := regRef(t, reg, "flaky/img:v1")
	testutil.Must1(Write(ctx, ref, img, Options{Transport: reg.Transport()}))(t)

	f := &flaky{next: reg.Transport(), fail503: 2, drops: 1}
	pulled := open(t, ref, Options{Transport: f})
	layers := testutil.Must1(pulled.Layers())(t)
	rc := testutil.Must1(layers[0].Compressed())(t)
	n := testutil.Must1(io.Copy(io.Discard, rc))(t)
	rc.Close()
	if want := testutil.Must1(layers[0].Size())(t); n != want {
		t.Errorf("read %d bytes of the layer, want %d", n, want)
	}
	if f.seen503 != 2 || f.seenDropped != 1 {
		t.Errorf("flaky transport saw %d 503s and %d drops, want 2 and 1", f.seen503, f.seenDropped)
	}
}

// recorder answers nothing itself: it records the requests and refuses
// HTTPS (like a host that speaks only HTTP).
type recorder struct {
	mu   sync.Mutex
	urls []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL.String())
	r.mu.Unlock()
	if req.URL.Scheme == "https" {
		return nil, errors.New("connection refused (test)")
	}
	return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: req, ProtoMajor: 1, ProtoMinor: 1}, nil
}

// TestPlainHTTPOnlyLoopbackOrInsecure: a private-network registry is never
// spoken to over plain HTTP unless Insecure (go-containerregistry would fall
// back to HTTP for RFC 1918 addresses); loopback may use HTTP.
func TestPlainHTTPOnlyLoopbackOrInsecure(t *testing.T) {
	ref := parse(t, "docker://10.11.12.13:5000/pht/train:v1")
	rec := &recorder{}
	_, err := Open(ctx, ref, Options{Transport: rec})
	if !errors.Is(err, ErrPlainHTTP) || !strings.Contains(err.Error(), "refusing plain HTTP to 10.11.12.13:5000") || strings.Contains(err.Error(), "--") {
		t.Errorf("plain HTTP to 10.11.12.13 without Insecure: %v, want a refusal", err)
	}
	for _, u := range rec.urls {
		if strings.HasPrefix(u, "http://") {
			t.Errorf("a plain HTTP request went out: %s", u)
		}
	}
	rec = &recorder{}
	_, _ = Open(ctx, ref, Options{Transport: rec, Insecure: true})
	if !anyPrefix(rec.urls, "http://10.11.12.13:5000/v2/") {
		t.Errorf("with Insecure no plain HTTP request was made: %v", rec.urls)
	}

	// Loopback over plain HTTP works without Insecure (the real registry).
	reg := testreg.Start(t, testreg.Options{})
	u, _ := url.Parse(reg.URL())
	if u.Scheme != "http" {
		t.Fatalf("test registry scheme %s", u.Scheme)
	}
	img := testutil.Must1(random.Image(64, 1))(t)
	testutil.Must1(Write(ctx, regRef(t, reg, "loop/img:v1"), img, Options{}))(t)
	for _, host := range []string{"localhost" + reg.Host[strings.LastIndex(reg.Host, ":"):]} {
		n := testutil.Must1(name.ParseReference(host + "/loop/img:v1"))(t)
		if got := digest(t, open(t, Ref{remoteRegistry{name: n}}, Options{})); got != digest(t, img) {
			t.Errorf("%s: %s, want %s", host, got, digest(t, img))
		}
	}
}

func anyPrefix(s []string, p string) bool {
	for _, x := range s {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}
