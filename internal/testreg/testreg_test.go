package testreg

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestStartCounts: for plain, auth and auth+TLS registries, a push of a
// random image is counted as exactly its blobs' uploads and one manifest PUT,
// a pull of one layer as one GET of that digest with its size in bytes, and
// requests without credentials are refused when Auth is on.
func TestStartCounts(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
	}{{"plain", Options{}}, {"auth", Options{Auth: true}}, {"auth+tls", Options{Auth: true, TLS: true}}} {
		o := c.o
		t.Run(c.name, func(t *testing.T) {
			r := Start(t, o)
			if (o.Auth && r.Password == "") || (o.TLS && r.CAFile == "") {
				t.Fatalf("registry %+v lacks credentials or CA file", r)
			}
			opts := []remote.Option{remote.WithTransport(r.Transport())}
			if o.Auth {
				opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}))
			}
			var nameOpts []name.Option
			if !o.TLS {
				nameOpts = append(nameOpts, name.Insecure)
			}
			ref, err := name.ParseReference(r.Host+"/t/img:v1", nameOpts...)
			if err != nil {
				t.Fatal(err)
			}
			img, err := random.Image(1000, 3)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref, img, opts...); err != nil {
				t.Fatalf("push: %v\n%s", err, r.Log())
			}
			s := r.Stats()
			layers, _ := img.Layers()
			cfgName, _ := img.ConfigName()
			for _, l := range layers {
				d, _ := l.Digest()
				if s.BlobUploads[d.String()] != 1 {
					t.Errorf("layer %s uploaded %d times, want 1", d, s.BlobUploads[d.String()])
				}
			}
			if s.BlobUploads[cfgName.String()] != 1 || len(s.BlobUploads) != 4 {
				t.Errorf("uploads %v, want the 3 layers and config %s once each", s.BlobUploads, cfgName)
			}
			if s.ManifestPuts != 1 || s.Mounts != 0 {
				t.Errorf("manifest puts %d mounts %d, want 1 and 0", s.ManifestPuts, s.Mounts)
			}
			if s.BlobBytesUp < 3000 {
				t.Errorf("blob bytes up %d, want at least the 3 layers' size", s.BlobBytesUp)
			}

			r.ResetStats()
			pulled, err := remote.Image(ref, opts...)
			if err != nil {
				t.Fatal(err)
			}
			pl, _ := pulled.Layers()
			rc, err := pl[1].Compressed()
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			d, _ := pl[1].Digest()
			s = r.Stats()
			if s.BlobGets[d.String()] != 1 || len(s.BlobGets) != 1 || s.BlobBytesDown != n {
				t.Errorf("after reading layer %s (%d bytes): gets %v, bytes down %d", d, n, s.BlobGets, s.BlobBytesDown)
			}

			resp, err := (&http.Client{Transport: r.Transport()}).Get(r.URL() + "/v2/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusOK
			if o.Auth {
				want = http.StatusUnauthorized
			}
			if resp.StatusCode != want {
				t.Errorf("GET /v2/ without credentials: %d, want %d", resp.StatusCode, want)
			}
		})
	}
}

// TestSkopeoTrustsCertDir: skopeo inspects a push to the TLS registry with
// --cert-dir = CertDir (no --tls-verify=false), so the CA setup is real.
func TestSkopeoTrustsCertDir(t *testing.T) {
	r := Start(t, Options{TLS: true, Auth: true})
	ref, _ := name.ParseReference(r.Host + "/t/sk:v1")
	img, _ := random.Image(100, 1)
	if err := remote.Write(ref, img, remote.WithTransport(r.Transport()),
		remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password})); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("skopeo", "inspect", "--raw", "--cert-dir", r.CertDir,
		"--creds", r.Username+":"+r.Password, "docker://"+ref.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	raw, _ := img.RawManifest()
	if strings.TrimSpace(string(out)) != strings.TrimSpace(string(raw)) {
		t.Errorf("skopeo saw manifest\n%s\nwant\n%s", out, raw)
	}
}

// TestNotify: with Notify set, the registry posts its push events to that URL.
func TestNotify(t *testing.T) {
	got := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Header.Get("Content-Type") + " " + string(b)
	}))
	defer srv.Close()
	r := Start(t, Options{Notify: srv.URL})
	ref, _ := name.ParseReference(r.Host+"/t/notify:v1", name.Insecure)
	img, _ := random.Image(100, 1)
	if err := remote.Write(ref, img, remote.WithTransport(r.Transport())); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-got:
			compact := strings.Join(strings.Fields(ev), "")
			if strings.Contains(compact, `"action":"push"`) && strings.Contains(compact, "t/notify") {
				return
			}
		case <-deadline:
			t.Fatalf("no push event for t/notify within 20 s\n%s", r.Log())
		}
	}
}
