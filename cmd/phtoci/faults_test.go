package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// faultWorld is a registry with a fault proxy in front of it and a train
// that station st1 has run, whose results layer (about 3 MiB) is what the
// next station downloads.
type faultWorld struct {
	*world
	reg   *testreg.Registry
	proxy *faultproxy.Proxy
	train string // the train after st1, by the registry's own host
	layer string // the digest of its results layer
}

func newFaultWorld(t *testing.T) *faultWorld {
	t.Helper()
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st1", "st2")
	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	train := reg.Host + "/pht/faults:st1"
	ok(t, append([]string{"post-run", built, "--results", w.results(t, "st1"), "-o", train}, w.stationArgs("st1")...)...)
	ls, err := openRef(t, train, oci.Options{}).Layers()
	testutil.Must(t, err)
	d, err := ls[len(ls)-1].Digest()
	testutil.Must(t, err)
	if sz, _ := ls[len(ls)-1].Size(); sz < 2<<20 {
		t.Fatalf("results layer is %d bytes; the tests need more than 2 MiB", sz)
	}
	return &faultWorld{world: w, reg: reg, proxy: faultproxy.Start(t, reg.URL()), train: train, layer: d.String()}
}

// via is the reference of repo:tag through the fault proxy.
func (f *faultWorld) via(tag string) string { return f.proxy.Host + "/pht/faults:" + tag }

func (f *faultWorld) digest(t *testing.T, tag string) string {
	t.Helper()
	ref, err := oci.ParseRef(f.reg.Host + "/pht/faults:" + tag)
	testutil.Must(t, err)
	img, err := oci.Open(context.Background(), ref, oci.Options{})
	if err != nil {
		return ""
	}
	d, err := img.Digest()
	testutil.Must(t, err)
	return d.String()
}

// TestStallTimeout: a registry that stops sending mid-blob (pre-run's
// download of the results layer) or stops taking the upload (post-run)
// ends the command with exit 3 after the stall timeout and its retries,
// naming the registry and the blob; nothing is pushed and the input tag
// is unchanged.
func TestStallTimeout(t *testing.T) {
	f := newFaultWorld(t)
	before := f.digest(t, "st1")

	t.Run("pre-run download", func(t *testing.T) {
		// The first request stalls after 1 MiB, the resumed ones at once.
		first := f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet, Path: "/blobs/" + f.layer, Nth: 1, Bytes: 1 << 20})
		i := f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet, Path: "/blobs/" + f.layer})
		defer f.proxy.Clear()
		start := time.Now()
		fails(t, exitIO, nil, append([]string{"pre-run", f.via("st1"), "-o", f.via("pre"), "--stall-timeout", "1s"}, f.stationArgs("st2")...),
			"registry "+f.proxy.Host, "blob "+f.layer, "no data for 1s", "after 1.0 MiB", "retried 3 times")
		t.Logf("pre-run gave up after %v (%d stalls)", time.Since(start).Round(100*time.Millisecond), f.proxy.Fired(first)+f.proxy.Fired(i))
		if n := f.proxy.Fired(first) + f.proxy.Fired(i); n != 4 {
			t.Errorf("the blob was asked for %d times, want 4 (1 + 3 retries)", n)
		}
		if d := f.digest(t, "pre"); d != "" {
			t.Errorf("pre-run pushed %s", d)
		}
	})

	t.Run("post-run upload", func(t *testing.T) {
		i := f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodPatch, OnRequest: true, Bytes: 512 << 10})
		defer f.proxy.Clear()
		start := time.Now()
		fails(t, exitIO, []string{"PHTOCI_STALL_TIMEOUT=1s"}, append([]string{"post-run", f.via("st1"), "--results", f.world.results(t, "st2")}, f.stationArgs("st2")...),
			"registry "+f.proxy.Host, "blob upload to pht/faults", "no data for 1s", "retried 3 times")
		t.Logf("post-run gave up after %v (%d stalls)", time.Since(start).Round(100*time.Millisecond), f.proxy.Fired(i))
		if n := f.proxy.Fired(i); n != 4 {
			t.Errorf("the upload was tried %d times, want 4 (1 + 3 retries)", n)
		}
		if d := f.digest(t, "st1"); d != before {
			t.Errorf("post-run moved the tag from %s to %s", before, d)
		}
	})
}

// TestTransientFaultsRetried: a connection dropped once after 1 MiB of
// the layer download is resumed and pre-run succeeds; one that drops every
// time fails with exit 3 saying what happened (not "corrupt layer"); a
// single drop or 503 on the streamed layer upload is sent again from the
// spool and post-run succeeds.
func TestTransientFaultsRetried(t *testing.T) {
	f := newFaultWorld(t)

	t.Run("download dropped once", func(t *testing.T) {
		i := f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Drop, Method: http.MethodGet, Path: "/blobs/" + f.layer, Nth: 1, Bytes: 1 << 20})
		defer f.proxy.Clear()
		ok(t, append([]string{"pre-run", f.via("st1"), "-o", f.via("pre-drop")}, f.stationArgs("st2")...)...)
		if f.proxy.Fired(i) != 1 {
			t.Fatalf("the fault fired %d times, want 1", f.proxy.Fired(i))
		}
		ok(t, append([]string{"post-run", f.via("pre-drop"), "-o", f.via("st2-after-drop")}, f.stationArgs("st2")...)...)
		ok(t, "verify", f.via("st2-after-drop"), "--quiet")
	})

	t.Run("download dropped every time", func(t *testing.T) {
		f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Drop, Method: http.MethodGet, Path: "/blobs/" + f.layer, Nth: 1, Bytes: 1 << 20})
		f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Drop, Method: http.MethodGet, Path: "/blobs/" + f.layer, Bytes: 0})
		defer f.proxy.Clear()
		r := fails(t, exitIO, nil, append([]string{"pre-run", f.via("st1"), "-o", f.via("pre-dropped")}, f.stationArgs("st2")...),
			"connection closed early after 1.0 MiB of blob "+f.layer, "retried 3 times")
		if strings.Contains(r.stderr, "corrupt") {
			t.Errorf("a network drop is called corruption: %s", r.stderr)
		}
		if d := f.digest(t, "pre-dropped"); d != "" {
			t.Errorf("pre-run pushed %s", d)
		}
	})

	for _, c := range []struct {
		name  string
		fault faultproxy.Fault
	}{
		{"upload dropped once", faultproxy.Fault{Kind: faultproxy.Drop, Method: http.MethodPatch, OnRequest: true, Nth: 1, Bytes: 1 << 20}},
		{"upload 503 once", faultproxy.Fault{Kind: faultproxy.Status, Method: http.MethodPatch, Nth: 1, Code: http.StatusServiceUnavailable}},
	} {
		t.Run(c.name, func(t *testing.T) {
			i := f.proxy.Add(c.fault)
			defer f.proxy.Clear()
			tag := strings.ReplaceAll(c.name, " ", "-")
			ok(t, append([]string{"post-run", f.via("st1"), "--results", f.world.results(t, "st2"), "-o", f.via(tag)}, f.stationArgs("st2")...)...)
			if f.proxy.Fired(i) != 1 {
				t.Fatalf("the fault fired %d times, want 1", f.proxy.Fired(i))
			}
			ok(t, "verify", f.reg.Host+"/pht/faults:"+tag, "--quiet")
		})
	}
}

// TestLostUpdateReported: another push to the output tag between
// post-run's push and its read-back (made by a proxy hook, so the race is
// certain) is reported: exit 3, on stderr and in the --json output.
func TestLostUpdateReported(t *testing.T) {
	f := newFaultWorld(t)
	other := openRef(t, f.train, oci.Options{})
	otherDigest, err := other.Digest()
	testutil.Must(t, err)
	var pushed atomic.Bool
	var once sync.Once
	var raceErr error
	f.proxy.Hook(func(r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/manifests/race") {
			return
		}
		if r.Method == http.MethodPut {
			pushed.Store(true)
			return
		}
		if pushed.Load() {
			once.Do(func() {
				ref, err := oci.ParseRef(f.reg.Host + "/pht/faults:race")
				if err == nil {
					_, err = oci.Write(context.Background(), ref, other, oci.Options{})
				}
				raceErr = err
			})
		}
	})
	r := fails(t, exitIO, nil, append([]string{"post-run", f.via("st1"), "--results", f.world.results(t, "st2"), "-o", f.via("race"), "--json"}, f.stationArgs("st2")...),
		"pht/faults:race", "points at "+otherDigest.String(), "another writer")
	testutil.Must(t, raceErr)
	var out struct {
		OK         bool
		LostUpdate struct{ Tag, Pushed, Now string }
	}
	readJSON(t, r.stdout, &out)
	if out.OK || out.LostUpdate.Now != otherDigest.String() || out.LostUpdate.Pushed == "" || out.LostUpdate.Pushed == out.LostUpdate.Now {
		t.Errorf("--json output %s: want lostUpdate with pushed and now (%s)", r.stdout, otherDigest)
	}
	if d := f.digest(t, "race"); d != otherDigest.String() {
		t.Errorf("tag race is %s, want the other push's %s", d, otherDigest)
	}
}

// TestVerifyMissingLayer: verify checks that every layer is there with its
// size, base layers too (which it does not download): a base layer blob
// deleted from the registry's storage, and one truncated in an OCI layout,
// fail verify naming the layer.
func TestVerifyMissingLayer(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st1")
	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	img := openRef(t, built, oci.Options{})
	ls, err := img.Layers()
	testutil.Must(t, err)
	base, err := ls[0].Digest()
	testutil.Must(t, err)

	t.Run("registry", func(t *testing.T) {
		ref := reg.Host + "/pht/missing:v1"
		writeRef(t, img, ref, oci.Options{})
		ok(t, "verify", ref, "--quiet")
		reg.ResetStats()
		ok(t, "verify", ref, "--quiet")
		if n := reg.Stats().BlobGets[base.String()]; n != 0 {
			t.Errorf("verify downloaded the base layer %d times", n)
		}
		data := filepath.Join(reg.StorageDir, "docker/registry/v2/blobs/sha256", base.Hex[:2], base.Hex, "data")
		testutil.Must(t, os.Remove(data))
		fails(t, exitIO, nil, []string{"verify", ref, "--quiet"}, "layer 0 ("+base.String()+")", "no such blob")
	})

	t.Run("layout", func(t *testing.T) {
		dir := w.path("layout")
		writeRef(t, img, "oci:"+dir+":v1", oci.Options{})
		ok(t, "verify", "oci:"+dir+":v1", "--quiet")
		blob := filepath.Join(dir, "blobs/sha256", base.Hex)
		fi, err := os.Stat(blob)
		testutil.Must(t, err)
		testutil.Must(t, os.Truncate(blob, fi.Size()/2))
		fails(t, exitIO, nil, []string{"verify", "oci:" + dir + ":v1", "--quiet"}, "layer 0 ("+base.String()+")", "the manifest says")
		testutil.Must(t, os.Remove(blob))
		fails(t, exitIO, nil, []string{"verify", "oci:" + dir + ":v1", "--quiet"}, "layer 0 ("+base.String()+")", "not in the layout")
	})
}

// TestFlippedByteNamesLayer: a byte flipped in transit in the layer that
// pre-run reads fails it (nothing pushed), naming the layer's blob.
func TestFlippedByteNamesLayer(t *testing.T) {
	f := newFaultWorld(t)
	i := f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Flip, Method: http.MethodGet, Path: "/blobs/" + f.layer, Bytes: 1<<20 + 7})
	r := phtoci(t, "", nil, append([]string{"pre-run", f.via("st1"), "-o", f.via("flipped")}, f.stationArgs("st2")...)...)
	if r.code == 0 || f.proxy.Fired(i) == 0 {
		t.Fatalf("pre-run of a flipped layer: exit %d, fault fired %d times", r.code, f.proxy.Fired(i))
	}
	if !strings.Contains(r.stderr, f.layer) {
		t.Errorf("stderr %q does not name the layer %s", r.stderr, f.layer)
	}
	t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	if d := f.digest(t, "flipped"); d != "" {
		t.Errorf("pre-run pushed %s", d)
	}
}

// TestSignalDuringStalledDownload: SIGTERM while pre-run waits on a
// registry that stopped sending (stall timeout still far off) ends it
// promptly with exit 3; nothing is pushed.
func TestSignalDuringStalledDownload(t *testing.T) {
	f := newFaultWorld(t)
	i := f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet, Path: "/blobs/" + f.layer, Bytes: 1 << 20})
	cmd := exec.Command(phtociBin, append([]string{"pre-run", f.via("st1"), "-o", f.via("pre-signal")}, f.stationArgs("st2")...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	testutil.Must(t, cmd.Start())
	deadline := time.Now().Add(time.Minute)
	for f.proxy.Fired(i) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // into the stall
	start := time.Now()
	testutil.Must(t, cmd.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("pre-run still running 10 s after SIGTERM")
	}
	t.Logf("exited %v after SIGTERM: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != exitIO {
		t.Errorf("exit: %v, want code %d", err, exitIO)
	}
	if !strings.Contains(stderr.String(), "interrupted by SIGTERM") {
		t.Errorf("stderr %q does not say it was interrupted", stderr.String())
	}
	if d := f.digest(t, "pre-signal"); d != "" {
		t.Errorf("pre-run pushed %s", d)
	}
}
