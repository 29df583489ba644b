package webhook

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
)

// TestLimitRejected: a pushed train past a limit (here a layer of more
// tar entries than allowed, and more layers than allowed) is rejected
// with check "limit" at once, not retried as a registry error.
func TestLimitRejected(t *testing.T) {
	proxy, setTarget := relay(t)
	reg := testreg.Start(t, testreg.Options{Notify: proxy.URL + "/events", NotifyAuth: secret})
	env := train.Env{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(env.SetLimit("entries", "100"))
	must(env.SetLimit("layers", "3"))
	_, hs, _ := newServer(t, TrainVerifier{Env: env}, filepath.Join(t.TempDir(), "v.db"), Config{Registry: reg.Host})
	setTarget(hs.URL)

	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	if v := waitVerdict(t, hs.URL, "pht/train@"+good); v.Status != StatusVerified {
		t.Fatalf("train within the limits: %+v", v)
	}
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/train@"+good))(t), oci.Options{}))(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range 101 {
		tw.WriteHeader(&tar.Header{Name: "opt/pht_results/r" + strings.Repeat("x", i), Mode: 0o644, Typeflag: tar.TypeReg})
	}
	tw.Close()
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	many := testutil.Must1(mutate.AppendLayers(img, l))(t)
	d := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/many:latest"))(t), many, oci.Options{}))(t)
	v := waitVerdict(t, hs.URL, "pht/many@"+d.String())
	if v.Status != StatusRejected || v.Check != "limit" || v.Attempts != 1 || !strings.Contains(v.Message, "tar entries per layer: more than 100") {
		t.Errorf("train past the entries limit: %+v", v)
	}
	deep := testutil.Must1(mutate.AppendLayers(img, l, l))(t)
	d = testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/deep:latest"))(t), deep, oci.Options{}))(t)
	v = waitVerdict(t, hs.URL, "pht/deep@"+d.String())
	if v.Status != StatusRejected || v.Check != "limit" || !strings.Contains(v.Message, "layers per image, at most 3") {
		t.Errorf("train past the layers limit: %+v", v)
	}
}

// TestServeConfigLimits: limits: in serve.yaml takes the limit names; an
// unknown name or a bad value is an error at load time.
func TestServeConfigLimits(t *testing.T) {
	dir := t.TempDir()
	load := func(limits string) error {
		p := filepath.Join(dir, "serve.yaml")
		cfg := "listen: 127.0.0.1:0\nsecret: s\npublic_read: true\nallow_untrusted: true\nregistry: 127.0.0.1:5000\nstore: " + filepath.Join(dir, "v.db") + "\nlimits: " + limits + "\n"
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadServeConfig(p)
		return err
	}
	if err := load("{layers: 512, manifest-size: 8MiB, ratio: 5000}"); err != nil {
		t.Errorf("valid limits: %v", err)
	}
	for _, bad := range []string{"{nosuch: 1}", "{layers: many}", "{entries: -1}"} {
		if err := load(bad); err == nil || !strings.Contains(err.Error(), "limits") {
			t.Errorf("limits %s: got %v, want an error naming limits", bad, err)
		}
	}
}
