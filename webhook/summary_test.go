package webhook

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestSummaryStore: layer summaries round trip through both backends; a
// second store on the same PostgreSQL database sees them; beyond the
// entry or byte bound the least recently used go first.
func TestSummaryStore(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			st := open()
			defer st.Close()
			c := StoreSummaryCache{Store: st}
			if b, ok := c.Get("sha256-aa"); ok {
				t.Fatalf("empty store: got %q", b)
			}
			c.Put("sha256-aa", []byte("one"))
			c.Put("sha256-aa", []byte("two"))
			if b, ok := c.Get("sha256-aa"); !ok || string(b) != "two" {
				t.Fatalf("after two puts: %q %v, want \"two\"", b, ok)
			}
			if _, ok := c.Get("sha256-ab"); ok {
				t.Fatal("a key never put was found")
			}
			c.Put("big", make([]byte, maxSummaryLength+1))
			if _, ok := c.Get("big"); ok {
				t.Fatal("a summary over the length bound was kept")
			}

			defer func(n, b int) { maxSummaries, maxSummaryBytes = n, b }(maxSummaries, maxSummaryBytes)
			maxSummaries = 3
			c.Put("b", []byte("b"))
			c.Put("c", []byte("c")) // aa, b, c
			c.Get("sha256-aa")      // b, c, aa
			c.Put("d", []byte("d")) // c, aa, d: b evicted
			// Checked in this order (a Get is a use): aa, c, d.
			for _, k := range []struct {
				key  string
				kept bool
			}{{"sha256-aa", true}, {"b", false}, {"c", true}, {"d", true}} {
				if _, ok := c.Get(k.key); ok != k.kept {
					t.Errorf("entry bound: %s kept %v, want %v", k.key, ok, k.kept)
				}
			}
			maxSummaries, maxSummaryBytes = 100, 10
			c.Put("e", bytes.Repeat([]byte("e"), 9)) // 3+1+1+9 bytes: aa and c go, 10 are left
			for _, k := range []struct {
				key  string
				kept bool
			}{{"sha256-aa", false}, {"c", false}, {"d", true}, {"e", true}} {
				if _, ok := c.Get(k.key); ok != k.kept {
					t.Errorf("byte bound: %s kept %v, want %v", k.key, ok, k.kept)
				}
			}
		})
	}
}

// TestReplicasShareSummaries: two serve replicas (Run from serve.yaml) on
// one PostgreSQL database. Replica A verifies a train and reads its
// master's layers; replica B then verifies another train on the same
// master and downloads none of the master's layer blobs: it replays the
// summaries A left in the shared store.
func TestReplicasShareSummaries(t *testing.T) {
	pg := testpg.Start(t)
	dsn := pg.NewDB(t)
	reg := testreg.Start(t, testreg.Options{})
	digests := []string{buildForeignTrain(t, reg.Host+"/pht/train:a"), buildForeignTrain(t, reg.Host+"/pht/train:b")}
	layers := func(d string) map[string]bool {
		ref, err := name.NewDigest(reg.Host+"/pht/train@"+d, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := remote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		l, err := ls.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range l {
			h, err := x.Digest()
			if err != nil {
				t.Fatal(err)
			}
			out[h.String()] = true
		}
		return out
	}
	second := layers(digests[1])
	var master []string
	for d := range layers(digests[0]) {
		if second[d] {
			master = append(master, d)
		}
	}
	if len(master) == 0 {
		t.Fatal("the two trains share no layer; the test tests nothing")
	}
	a := runServe(t, "store: "+dsn, "registry: "+reg.Host)
	b := runServe(t, "store: "+dsn, "registry: "+reg.Host)

	reg.ResetStats()
	post(t, a+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", digests[0], reg.Host))
	if v := waitVerdict(t, a, "pht/train@"+digests[0]); v.Status != StatusVerified {
		t.Fatalf("replica A: %+v", v)
	}
	read := 0
	for _, d := range master {
		read += reg.Stats().BlobGets[d]
	}
	if read == 0 {
		t.Fatalf("replica A read none of the master's layers %v; the test tests nothing", master)
	}
	reg.ResetStats()
	post(t, b+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", digests[1], reg.Host))
	if v := waitVerdict(t, b, "pht/train@"+digests[1]); v.Status != StatusVerified {
		t.Fatalf("replica B: %+v", v)
	}
	st := reg.Stats()
	for _, d := range master {
		if n := st.BlobGets[d]; n != 0 {
			t.Errorf("replica B fetched master layer %s %d times, want 0 (A's summary in the store)", d, n)
		}
	}
	t.Logf("replica A fetched master layers %d times; replica B: %s", read, fmt.Sprint(st.BlobGets))
}

// buildForeignTrain pushes a fresh one-station train to ref as another
// builder makes it: without phtoci's labels and without whiteouts in its
// top layer, so keyless verify reads every layer, the master's too.
func buildForeignTrain(t *testing.T, ref string) string {
	t.Helper()
	out := buildOne(t)
	img := out.Image
	ls := testutil.Must1(img.Layers())(t)
	rc := testutil.Must1(ls[len(ls)-1].Uncompressed())(t)
	defer rc.Close()
	var buf bytes.Buffer
	tr, tw := tar.NewReader(rc), tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(path.Base(h.Name), ".wh.") {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	top := testutil.Layer(t, data)
	var adds []mutate.Addendum
	for _, l := range ls[:len(ls)-1] {
		adds = append(adds, mutate.Addendum{Layer: l})
	}
	plain := testutil.Must1(mutate.Append(empty.Image, append(adds, mutate.Addendum{Layer: top})...))(t)
	cf := testutil.Must1(img.ConfigFile())(t).DeepCopy()
	cf.Config.Labels = nil
	cf.RootFS.DiffIDs[len(ls)-1] = testutil.Must1(top.DiffID())(t)
	plain = testutil.Must1(mutate.ConfigFile(plain, cf))(t)
	return testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(ref))(t), plain, oci.Options{}))(t).String()
}

// TestServeStallTimeout: serve.yaml's stall_timeout reaches the registry
// client. A registry behind internal/faultproxy stalls mid-blob on every
// GET of one train's top layer; with stall_timeout 1s and verify_timeout
// 10m that train's verdict is an error naming the stall (not the
// verification timeout), and a train next to it is verified.
func TestServeStallTimeout(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	stuck := buildTrain(t, reg.Host+"/pht/stuck:latest", oci.Options{})
	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	ref := testutil.Must1(name.NewDigest(reg.Host+"/pht/stuck@"+stuck, name.Insecure))(t)
	ls := testutil.Must1(testutil.Must1(remote.Image(ref))(t).Layers())(t)
	top := testutil.Must1(ls[len(ls)-1].Digest())(t)
	if size := testutil.Must1(ls[len(ls)-1].Size())(t); size <= 100 {
		t.Fatalf("top layer of %d bytes: no middle to stall in", size)
	}
	proxy := faultproxy.Start(t, "http://"+reg.Host)
	fault := proxy.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodGet, Path: "/blobs/" + top.String(), Bytes: 100})
	base := runServe(t, "registry: "+proxy.Host, "stall_timeout: 1s", "verify_timeout: 10m", "retries: -1")

	post(t, base+"/events", secret, mediaTypeDistribution, distEventHost("pht/stuck", stuck, proxy.Host))
	post(t, base+"/events", secret, mediaTypeDistribution, distEventHost("pht/train", good, proxy.Host))
	if v := waitVerdict(t, base, "pht/train@"+good); v.Status != StatusVerified {
		t.Fatalf("train next to the stalled one: %+v", v)
	}
	v := waitVerdict(t, base, "pht/stuck@"+stuck)
	if v.Status != StatusError || !strings.Contains(v.Message, oci.ErrStall.Error()) || strings.Contains(v.Message, "timed out") {
		t.Fatalf("stalled train: %+v, want an error naming the stall", v)
	}
	if proxy.Fired(fault) == 0 {
		t.Fatal("the stall never fired; the test tests nothing")
	}
	t.Logf("stalled train: %s (stall fired %d times)", v.Message, proxy.Fired(fault))
}
