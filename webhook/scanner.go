package webhook

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Harbor's pluggable scanner adapter API v1.0 (goharbor/pluggable-scanner-
// spec, api/spec/scanner-adapter-openapi-v1.0.yaml, vendored in
// testdata/harbor): Harbor asks the server to "scan" an artifact, which queues it for
// verification like a push event, and reads back a vulnerability report.
// A train that failed verification, or an image that is no train, has one
// Critical vulnerability PHT-UNVERIFIED whose description is the failing
// check, so Harbor's "prevent vulnerable images from running" at Critical
// refuses to pull it; a verified train has none.
const (
	mediaTypeScanRequest  = "application/vnd.scanner.adapter.scan.request+json; version=1.0"
	mediaTypeScanResponse = "application/vnd.scanner.adapter.scan.response+json; version=1.0"
	mediaTypeScanMetadata = "application/vnd.scanner.adapter.metadata+json; version=1.0"
	mediaTypeScanError    = "application/vnd.scanner.adapter.error+json; version=1.0"
	// mediaTypeHarborReport is the report type of the adapter
	// specification, the one advertised and the default;
	// mediaTypeNativeReport is Harbor's own name for the same document,
	// answered only when the Accept header asks for it.
	mediaTypeHarborReport = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
	mediaTypeNativeReport = "application/vnd.security.vulnerability.report; version=1.1"
)

// unverifiedID is the vulnerability id of a train that is not verified.
const unverifiedID = "PHT-UNVERIFIED"

// scanArtifact is the specification's Artifact.
type scanArtifact struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	Tag        string `json:"tag,omitempty"`
	MimeType   string `json:"mime_type,omitempty"`
}

// scanRequest is the body of POST /api/v1/scan.
type scanRequest struct {
	Registry struct {
		URL           string `json:"url"`
		Authorization string `json:"authorization,omitempty"`
	} `json:"registry"`
	Artifact scanArtifact `json:"artifact"`
}

// scannerInfoDoc is the specification's Scanner.
type scannerInfoDoc struct {
	Name    string `json:"name"`
	Vendor  string `json:"vendor"`
	Version string `json:"version"`
}

// vulnerabilityItem is one entry of a report.
type vulnerabilityItem struct {
	ID          string   `json:"id"`
	Package     string   `json:"package"`
	Version     string   `json:"version"`
	FixVersion  string   `json:"fix_version,omitempty"`
	Severity    string   `json:"severity"`
	Description string   `json:"description"`
	Links       []string `json:"links"`
}

// vulnerabilityReport is the specification's HarborVulnerabilityReport.
type vulnerabilityReport struct {
	GeneratedAt     time.Time           `json:"generated_at"`
	Artifact        scanArtifact        `json:"artifact"`
	Scanner         scannerInfoDoc      `json:"scanner"`
	Severity        string              `json:"severity"`
	Vulnerabilities []vulnerabilityItem `json:"vulnerabilities"`
}

// scannerInfo is the specification's Scanner: this program and its
// version.
func (s *Server) scannerInfo() scannerInfoDoc {
	v := s.cfg.Version
	if v == "" {
		v = "devel"
	}
	return scannerInfoDoc{Name: "phtoci", Vendor: "phtoci", Version: v}
}

// mediaRange is one entry of an Accept header: a type and its version
// parameter (other parameters but q ignored).
type mediaRange struct{ typ, version string }

// parseMediaType reads "type/subtype; version=1.0; q=0.5"; ok is false
// for q=0 (refused).
func parseMediaType(s string) (mediaRange, bool) {
	parts := strings.Split(s, ";")
	m := mediaRange{typ: strings.ToLower(strings.TrimSpace(parts[0]))}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		v = strings.Trim(strings.TrimSpace(v), `"`)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "version":
			m.version = v
		case "q":
			if f, err := strconv.ParseFloat(v, 64); err == nil && f == 0 {
				return m, false
			}
		}
	}
	return m, true
}

// reportType picks the report type an Accept header allows: the
// specification's by default (no header, */*, application/*), Harbor's
// native name when asked for it; "" when the header allows neither.
func reportType(accept string) string {
	if strings.TrimSpace(accept) == "" {
		return mediaTypeHarborReport
	}
	offers := []string{mediaTypeHarborReport, mediaTypeNativeReport}
	for _, a := range strings.Split(accept, ",") {
		want, ok := parseMediaType(a)
		if !ok {
			continue
		}
		switch {
		case want.typ == "*/*" || want.typ == "application/*":
			return mediaTypeHarborReport
		}
		for _, o := range offers {
			have, _ := parseMediaType(o)
			if want.typ == have.typ && (want.version == "" || want.version == have.version) {
				return o
			}
		}
	}
	return ""
}

func scanError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", mediaTypeScanError)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]map[string]string{"error": {"message": fmt.Sprintf(format, args...)}})
}

// scanner serves /api/v1/...; Harbor authenticates with the shared secret
// (the scanner registration's "Bearer" credential).
func (s *Server) scanner(w http.ResponseWriter, r *http.Request) {
	if !s.secretOK(r) {
		scanError(w, http.StatusUnauthorized, "wrong or missing Authorization")
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/api/v1")
	switch {
	case r.Method == http.MethodGet && p == "/metadata":
		w.Header().Set("Content-Type", mediaTypeScanMetadata)
		json.NewEncoder(w).Encode(map[string]any{
			"scanner": s.scannerInfo(),
			"capabilities": []map[string][]string{{
				"consumes_mime_types": {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"},
				"produces_mime_types": {mediaTypeHarborReport},
			}},
			"properties": map[string]string{"harbor.scanner-adapter/scanner-type": "pht-train-verification"},
		})
	case r.Method == http.MethodPost && p == "/scan":
		s.scan(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/scan/") && strings.HasSuffix(p, "/report"):
		s.scanReport(w, r, strings.TrimSuffix(strings.TrimPrefix(p, "/scan/"), "/report"))
	default:
		scanError(w, http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	}
}

// scanID names a scan request by its artifact, so any replica answers it.
func scanID(a Artifact) string { return base64.RawURLEncoding.EncodeToString([]byte(a.Key())) }

func (s *Server) scan(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		scanError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBody+1))
	if err != nil || int64(len(body)) > s.cfg.MaxBody {
		scanError(w, http.StatusBadRequest, "scan request: body unreadable or over %d bytes", s.cfg.MaxBody)
		return
	}
	var req scanRequest
	if err := json.Unmarshal(body, &req); err != nil {
		scanError(w, http.StatusBadRequest, "scan request: %v", err)
		return
	}
	u, err := url.Parse(req.Registry.URL)
	switch {
	case err != nil || u.Host == "":
		scanError(w, http.StatusUnprocessableEntity, "registry.url: want a URL, found %q", req.Registry.URL)
		return
	case req.Artifact.Repository == "":
		scanError(w, http.StatusUnprocessableEntity, "artifact.repository: missing")
		return
	case !strings.HasPrefix(req.Artifact.Digest, "sha256:") || len(req.Artifact.Digest) != 71:
		scanError(w, http.StatusUnprocessableEntity, "artifact.digest: want sha256:<64 hex>, found %q", req.Artifact.Digest)
		return
	}
	a := Artifact{Registry: u.Host, Repository: req.Artifact.Repository, Digest: req.Artifact.Digest, Tag: req.Artifact.Tag, Time: time.Now().UTC()}
	if _, ok := s.registryFor(a.Registry); !ok {
		s.logEvent("scan", "refused", "host not allowed", a)
		scanError(w, http.StatusUnprocessableEntity, "registry.url: host %q not allowed", a.Registry)
		return
	}
	// Harbor's authorization is not used: the server pulls with its own
	// credentials, sent to the configured registries only.
	if _, err := s.submit(a); errors.Is(err, errQueueFull) {
		scanError(w, http.StatusServiceUnavailable, "%v", err)
		return
	} else if err != nil {
		s.logStoreError("POST /api/v1/scan", nil, err)
		scanError(w, http.StatusInternalServerError, "%s", storeMessage)
		return
	}
	s.logEvent("scan", "accepted", "", a)
	w.Header().Set("Content-Type", mediaTypeScanResponse)
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(map[string]string{"id": scanID(a)})
}

func (s *Server) scanReport(w http.ResponseWriter, r *http.Request, id string) {
	mt := reportType(r.Header.Get("Accept"))
	if mt == "" {
		scanError(w, http.StatusNotAcceptable, "Accept %q: this scanner produces %s", r.Header.Get("Accept"), mediaTypeHarborReport)
		return
	}
	raw, err := base64.RawURLEncoding.DecodeString(id)
	repo, digest, ok := strings.Cut(string(raw), "@")
	if err != nil || !ok {
		scanError(w, http.StatusNotFound, "scan request %q: unknown", id)
		return
	}
	v, err := s.cfg.Store.Get(repo, digest)
	if errors.Is(err, ErrNoVerdict) && !s.known(repo, digest) {
		// Neither decided nor queued, unless it was decided between the
		// two looks (a verdict and its dequeue are one transaction).
		if v, err = s.cfg.Store.Get(repo, digest); errors.Is(err, ErrNoVerdict) {
			scanError(w, http.StatusNotFound, "scan request %q: unknown", id)
			return
		}
	}
	if errors.Is(err, ErrNoVerdict) || (err == nil && v.Status == StatusPending) {
		w.Header().Set("Refresh-After", "5")
		w.Header().Set("Location", r.URL.Path)
		w.WriteHeader(http.StatusFound)
		return
	}
	if err != nil {
		s.logStoreError("GET /api/v1/scan/"+id+"/report", nil, err)
		scanError(w, http.StatusInternalServerError, "%s", storeMessage)
		return
	}
	rep := vulnerabilityReport{GeneratedAt: v.Time, Scanner: s.scannerInfo(), Severity: "Unknown", Vulnerabilities: []vulnerabilityItem{},
		Artifact: scanArtifact{Repository: repo, Digest: digest, Tag: v.Artifact.Tag}}
	if v.Status != StatusVerified {
		check := v.Check
		if check == "" {
			check = v.Status // an error: the registry kept failing
		}
		rep.Severity = "Critical"
		rep.Vulnerabilities = append(rep.Vulnerabilities, vulnerabilityItem{ID: unverifiedID, Package: repo, Version: digest,
			Severity: "Critical", Description: strings.TrimSpace(check + ": " + v.Message), Links: []string{}})
	}
	w.Header().Set("Content-Type", mt)
	json.NewEncoder(w).Encode(rep)
}

// known reports whether repository@digest is queued or being verified,
// here or by another replica.
func (s *Server) known(repo, digest string) bool {
	s.mu.Lock()
	_, ok := s.slots[repo+"@"+digest]
	s.mu.Unlock()
	if ok {
		return true
	}
	q, err := s.cfg.Store.isQueued(repo + "@" + digest)
	return err != nil || q // a store error: let Harbor ask again
}
