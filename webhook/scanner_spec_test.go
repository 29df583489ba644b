package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// specSchemas compiles the schemas of the vendored pluggable scanner spec
// (testdata/harbor/scanner-adapter-openapi-v1.0.yaml) by name, and
// returns the spec's media types as its paths list them.
func specSchemas(t *testing.T) (map[string]*jsonschema.Schema, []string) {
	t.Helper()
	raw := testutil.Must1(os.ReadFile("testdata/harbor/scanner-adapter-openapi-v1.0.yaml"))(t)
	var doc any
	testutil.Must(t, yaml.Unmarshal(raw, &doc))
	b := testutil.Must1(json.Marshal(stringKeys(doc)))(t) // YAML's maps as JSON
	spec := testutil.Must1(jsonschema.UnmarshalJSON(bytes.NewReader(b)))(t)
	c := jsonschema.NewCompiler()
	testutil.Must(t, c.AddResource("spec.json", spec))
	out := map[string]*jsonschema.Schema{}
	for _, n := range []string{"ScannerAdapterMetadata", "ScanResponse", "HarborVulnerabilityReport", "ErrorResponse"} {
		out[n] = testutil.Must1(c.Compile("spec.json#/components/schemas/" + n))(t)
	}
	var types []string
	for _, line := range strings.Split(string(raw), "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, `"application/vnd.scanner.adapter.`) && strings.HasSuffix(l, `":`) {
			types = append(types, strings.TrimSuffix(strings.TrimPrefix(l, `"`), `":`))
		}
	}
	return out, types
}

// stringKeys makes YAML's maps with non-string keys (response codes)
// JSON objects.
func stringKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = stringKeys(e)
		}
	case map[any]any:
		m := map[string]any{}
		for k, e := range x {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = stringKeys(e)
		}
	}
	return v
}

// TestScannerAdapterAgainstSpec: every answer of the scanner adapter
// (metadata, scan accepted, reports of a verified and a rejected train,
// errors) has a media type the v1.0 specification names for that answer,
// and a body valid against the specification's schema for it. The
// metadata advertises only the specification's report type and the
// program's version; the report honours Accept: the v1.0 type (however
// spaced, alone, in a list, or by */*), Harbor's native type when asked
// for it, 406 for a type the adapter does not produce.
func TestScannerAdapterAgainstSpec(t *testing.T) {
	schemas, specTypes := specSchemas(t)
	if len(specTypes) < 5 {
		t.Fatalf("media types of the spec: %v", specTypes)
	}
	isSpecType := func(mt string) bool {
		for _, s := range specTypes {
			if s == mt {
				return true
			}
		}
		return false
	}
	check := func(what, schema, ctype string, body []byte) {
		t.Helper()
		if !isSpecType(ctype) {
			t.Errorf("%s: Content-Type %q is no media type of the spec", what, ctype)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err != nil {
			t.Errorf("%s: %v: %s", what, err, body)
			return
		}
		if err := schemas[schema].Validate(v); err != nil {
			t.Errorf("%s: body is not a valid %s: %v\n%s", what, schema, err, body)
		}
	}

	reg := testreg.Start(t, testreg.Options{})
	_, hs, _ := newServer(t, TrainVerifier{}, filepath.Join(t.TempDir(), "h.db"),
		Config{Registries: map[string]string{"harbor.example": reg.Host}, Version: "1.2.3-spec"})
	harbor := "https://harbor.example"

	resp, b := scanDo(t, http.MethodGet, hs.URL+"/api/v1/metadata", secret, "", "", nil)
	check("metadata", "ScannerAdapterMetadata", resp.Header.Get("Content-Type"), b)
	var md struct {
		Scanner      scannerInfoDoc
		Capabilities []struct {
			Produces []string `json:"produces_mime_types"`
		}
	}
	testutil.Must(t, json.Unmarshal(b, &md))
	if md.Scanner.Version != "1.2.3-spec" {
		t.Errorf("metadata scanner version %q, want the program's 1.2.3-spec", md.Scanner.Version)
	}
	for _, c := range md.Capabilities {
		for _, p := range c.Produces {
			if !isSpecType(p) {
				t.Errorf("metadata advertises %q, no type of the spec", p)
			}
		}
	}

	good := buildTrain(t, reg.Host+"/pht/train:latest", oci.Options{})
	bad := tamper(t, reg.Host, good, "pht/bad")
	for _, c := range []struct{ repo, digest string }{{"pht/train", good}, {"pht/bad", bad}} {
		resp, b := scanDo(t, http.MethodPost, hs.URL+"/api/v1/scan", secret, mediaTypeScanRequest, "", scanReq(harbor, c.repo, c.digest, "latest"))
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("scan %s: %d %s", c.repo, resp.StatusCode, b)
		}
		check("scan response", "ScanResponse", resp.Header.Get("Content-Type"), b)
		var sr struct{ ID string }
		testutil.Must(t, json.Unmarshal(b, &sr))
		report := hs.URL + "/api/v1/scan/" + sr.ID + "/report"
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if resp, _ := scanDo(t, http.MethodGet, report, secret, "", "", nil); resp.StatusCode != http.StatusFound {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no report within 60 s", c.repo)
			}
		}
		for _, a := range []struct{ accept, want string }{
			{"", mediaTypeHarborReport},
			{"application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0", mediaTypeHarborReport},
			{"application/vnd.scanner.adapter.vuln.report.harbor+json;version=1.0", mediaTypeHarborReport},
			{"application/vnd.scanner.adapter.vuln.report.raw, application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0", mediaTypeHarborReport},
			{"application/json;q=0.5, */*;q=0.1", mediaTypeHarborReport},
			{mediaTypeNativeReport, mediaTypeNativeReport},
		} {
			resp, b := scanDo(t, http.MethodGet, report, secret, "", a.accept, nil)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != a.want {
				t.Errorf("%s, Accept %q: %d %s, want 200 %s", c.repo, a.accept, resp.StatusCode, resp.Header.Get("Content-Type"), a.want)
				continue
			}
			if a.want == mediaTypeHarborReport {
				check(c.repo+" report", "HarborVulnerabilityReport", a.want, b)
			}
		}
		for _, accept := range []string{"application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.1", "application/vnd.scanner.adapter.vuln.report.raw"} {
			resp, b := scanDo(t, http.MethodGet, report, secret, "", accept, nil)
			if resp.StatusCode != http.StatusNotAcceptable {
				t.Errorf("Accept %q: %d %s, want 406", accept, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			check("406", "ErrorResponse", resp.Header.Get("Content-Type"), b)
		}
	}
	for _, c := range []struct {
		name, method, path, auth string
		body                     []byte
	}{
		{"registry not allowed", http.MethodPost, "/api/v1/scan", secret, scanReq("https://evil.example", "pht/train", good, "")},
		{"not JSON", http.MethodPost, "/api/v1/scan", secret, []byte("{")},
		{"wrong secret", http.MethodGet, "/api/v1/metadata", "Bearer nope", nil},
		{"unknown scan id", http.MethodGet, "/api/v1/scan/cGh0L25vQHNoYTI1Njox/report", secret, nil},
	} {
		resp, b := scanDo(t, c.method, hs.URL+c.path, c.auth, mediaTypeScanRequest, "", c.body)
		check(c.name, "ErrorResponse", resp.Header.Get("Content-Type"), b)
	}
}
