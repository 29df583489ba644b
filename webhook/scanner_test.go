package webhook

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

func scanDo(t *testing.T, method, url, auth, ctype, accept string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// scanReq is a scanRequest as Harbor sends it (the specification's
// example shape, with a robot account's authorization).
func scanReq(registryURL, repo, digest, tag string) []byte {
	b, _ := json.Marshal(map[string]any{
		"registry": map[string]string{"url": registryURL, "authorization": "Basic cm9ib3Q6c2VjcmV0"},
		"artifact": map[string]string{"repository": repo, "digest": digest, "tag": tag, "mime_type": "application/vnd.oci.image.manifest.v1+json"},
	})
	return b
}

// scanReport asks for a scan and polls its report as Harbor does (302 with
// Refresh-After while it is made) until 200.
func scanReport(t *testing.T, base, registryURL, repo, digest, accept string) (vulnerabilityReport, string) {
	t.Helper()
	resp, b := scanDo(t, http.MethodPost, base+"/api/v1/scan", secret, mediaTypeScanRequest, "", scanReq(registryURL, repo, digest, "latest"))
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Content-Type") != mediaTypeScanResponse {
		t.Fatalf("POST /api/v1/scan: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var sr struct{ ID string }
	if err := json.Unmarshal(b, &sr); err != nil || sr.ID == "" {
		t.Fatalf("scan response %s: %v", b, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, b := scanDo(t, http.MethodGet, base+"/api/v1/scan/"+sr.ID+"/report", secret, "", accept, nil)
		switch resp.StatusCode {
		case http.StatusFound:
			if resp.Header.Get("Refresh-After") == "" {
				t.Fatal("302 without Refresh-After")
			}
			time.Sleep(100 * time.Millisecond)
			continue
		case http.StatusOK:
			var rep vulnerabilityReport
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatalf("report %s: %v", b, err)
			}
			return rep, resp.Header.Get("Content-Type")
		default:
			t.Fatalf("report: %d %s", resp.StatusCode, b)
		}
	}
	t.Fatal("no report within 60 s")
	return vulnerabilityReport{}, ""
}

// TestHarborScanner: Harbor's scanner adapter API v1.1 against a real
// registry holding a verified train, a tampered train and an image that is
// no train. Only the verified train has no vulnerability; the others have
// one Critical PHT-UNVERIFIED naming the failing check. Requests naming a
// registry that is not allowed, unknown scan ids and a wrong secret are
// refused with the specification's error shape.
func TestHarborScanner(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "h.db"), Config{Registries: map[string]string{"harbor.example": reg.Host}})
	harbor := "https://harbor.example"

	resp, b := scanDo(t, http.MethodGet, hs.URL+"/api/v1/metadata", secret, "", "", nil)
	var md struct {
		Scanner      scannerInfoDoc `json:"scanner"`
		Capabilities []struct {
			Consumes []string `json:"consumes_mime_types"`
			Produces []string `json:"produces_mime_types"`
		} `json:"capabilities"`
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != mediaTypeScanMetadata || json.Unmarshal(b, &md) != nil ||
		md.Scanner.Name != "phtoci" || len(md.Capabilities) != 1 || !strings.Contains(strings.Join(md.Capabilities[0].Produces, ","), mediaTypeHarborReport) ||
		!strings.Contains(strings.Join(md.Capabilities[0].Consumes, ","), "application/vnd.oci.image.manifest.v1+json") {
		t.Fatalf("metadata: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}

	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	rep, ct := scanReport(t, hs.URL, harbor, "pht/train", good, mediaTypeNativeReport)
	if ct != mediaTypeNativeReport || len(rep.Vulnerabilities) != 0 || rep.Artifact.Digest != good || rep.Scanner.Name != "phtoci" {
		t.Fatalf("verified train: %s %+v", ct, rep)
	}

	// Tampered: an extra, unsigned file.
	img := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/train@"+good))(t), oci.Options{}))(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "opt/pht_train/extra.py", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("evil"))
	tw.Close()
	data := buf.Bytes()
	l := testutil.Layer(t, data)
	bad := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/bad:latest"))(t), testutil.Must1(mutate.AppendLayers(img, l))(t), oci.Options{}))(t)
	// Not a train: the master image itself.
	base := testutil.Must1(oci.Open(context.Background(), testutil.Must1(oci.ParseRef("oci-archive:../testdata/sample/master.oci.tar"))(t), oci.Options{}))(t)
	plain := testutil.Must1(oci.Write(context.Background(), testutil.Must1(oci.ParseRef(reg.Host+"/pht/plain:latest"))(t), base, oci.Options{}))(t)
	for _, c := range []struct{ repo, digest, check string }{{"pht/bad", bad.String(), "unsigned_file: "}, {"pht/plain", plain.String(), "not_a_train: "}} {
		rep, ct := scanReport(t, hs.URL, harbor, c.repo, c.digest, "")
		if ct != mediaTypeHarborReport || rep.Severity != "Critical" || len(rep.Vulnerabilities) != 1 {
			t.Fatalf("%s: %s %+v", c.repo, ct, rep)
		}
		v := rep.Vulnerabilities[0]
		if v.ID != unverifiedID || v.Severity != "Critical" || !strings.HasPrefix(v.Description, c.check) || v.Version != c.digest {
			t.Errorf("%s: vulnerability %+v, want %s Critical %q…", c.repo, v, unverifiedID, c.check)
		}
	}

	for _, c := range []struct {
		name, method, path, auth string
		body                     []byte
		want                     int
	}{
		{"registry not allowed", http.MethodPost, "/api/v1/scan", secret, scanReq("https://evil.example", "pht/train", good, ""), 422},
		{"digest malformed", http.MethodPost, "/api/v1/scan", secret, scanReq(harbor, "pht/train", "sha256:12", ""), 422},
		{"not JSON", http.MethodPost, "/api/v1/scan", secret, []byte("{"), 400},
		{"wrong secret", http.MethodPost, "/api/v1/scan", "Bearer nope", scanReq(harbor, "pht/train", good, ""), 401},
		{"wrong secret for a report", http.MethodGet, "/api/v1/scan/x/report", "", nil, 401},
		{"unknown scan id", http.MethodGet, "/api/v1/scan/cGh0L25vQHNoYTI1Njox/report", secret, nil, 404},
	} {
		resp, b := scanDo(t, c.method, hs.URL+c.path, c.auth, mediaTypeScanRequest, "", c.body)
		var e struct{ Error struct{ Message string } }
		if resp.StatusCode != c.want || resp.Header.Get("Content-Type") != mediaTypeScanError || json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
			t.Errorf("%s: %d %s %s, want %d with an error message", c.name, resp.StatusCode, resp.Header.Get("Content-Type"), b, c.want)
		}
	}
}
