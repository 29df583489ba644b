package oci

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// registryError is a registry's error answer in one line, without the
// Go maps of its detail field: "registry HOST: authentication required to
// pull REPO". It wraps the transport.Error and ErrUnauthorized, ErrDenied
// or ErrNotFound as the status says.
type registryError struct {
	host, repo, action string
	te                 *transport.Error
	kind               error
	name               name.Repository
	creds              string // for ErrUnauthorized: what was sent (withCredentials)
}

func (e *registryError) Error() string {
	switch e.kind {
	case ErrUnauthorized:
		s := fmt.Sprintf("registry %s: authentication required to %s %s", e.host, e.action, e.repo)
		if e.creds != "" {
			s += " (" + e.creds + ")"
		}
		return s
	case ErrDenied:
		return fmt.Sprintf("registry %s: access denied to %s %s (HTTP %d%s)", e.host, e.action, e.repo, e.te.StatusCode, e.codes(" "))
	}
	s := fmt.Sprintf("registry %s: %s %s: HTTP %d%s", e.host, e.action, e.repo, e.te.StatusCode, e.codes(" "))
	if e.kind == ErrNotFound {
		s += " (" + ErrNotFound.Error() + ")"
	}
	return s
}

// codes are the answer's error codes after sep, "" when none. Only the
// codes: the registry's messages and details are its own text (Go maps, or
// whatever a hostile registry puts there).
func (e *registryError) codes(sep string) string {
	var codes []string
	for _, d := range e.te.Errors {
		if c := string(d.Code); c != "" && len(c) <= 40 && strings.Trim(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == "" {
			codes = append(codes, c)
		}
	}
	if len(codes) == 0 {
		return ""
	}
	return sep + strings.Join(codes, ",")
}

// IsRegistrySummary says whether err is (or wraps) one of this package's
// one-line registry errors, whose text holds none of the registry's own
// words (status, error codes, host and repository only).
func IsRegistrySummary(err error) bool {
	var re *registryError
	return errors.As(err, &re)
}

func (e *registryError) Unwrap() []error {
	if e.kind != nil {
		return []error{e.kind, e.te}
	}
	return []error{e.te}
}

// registryErr rewrites a registry's error answer about n (a
// name.Reference or name.Repository) as a registryError; other errors are
// returned as they are.
func registryErr(n name.Repository, what fmt.Stringer, action string, err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	host := n.RegistryStr()
	re := &registryError{host: host, repo: strings.TrimPrefix(what.String(), host+"/"), action: action, te: te, name: n}
	switch {
	case te.StatusCode == http.StatusUnauthorized || hasCode(te, transport.UnauthorizedErrorCode):
		re.kind = ErrUnauthorized
	case te.StatusCode == http.StatusForbidden || hasCode(te, transport.DeniedErrorCode):
		re.kind = ErrDenied
	case te.StatusCode == http.StatusNotFound:
		re.kind = ErrNotFound
	case len(te.Errors) == 0 || !strings.Contains(err.Error(), te.Error()):
		// Not the registry's own answer alone (e.g. a TLS failure and a
		// plain HTTP fallback's answer): keep every part.
		return fmt.Errorf("%s: %w", what, err)
	}
	return re
}

// withCredentials adds to an authentication error in err which
// credentials opts sent and where they came from, or where none were found.
func withCredentials(err error, opts Options) error {
	var re *registryError
	if err != nil && errors.As(err, &re) && re.kind == ErrUnauthorized && re.creds == "" {
		re.creds = describeCredentials(opts, re.name)
	}
	return err
}

func isRegistryErr(err error) bool {
	var te *transport.Error
	return errors.As(err, &te)
}

func hasCode(te *transport.Error, c transport.ErrorCode) bool {
	for _, d := range te.Errors {
		if d.Code == c {
			return true
		}
	}
	return false
}

// registryFailure finishes an error of a registry operation for its
// caller: an authentication error says what was sent (withCredentials),
// and request URLs are replaced by what they transfer (WithoutURLs).
func registryFailure(err error, opts Options) error {
	return WithoutURLs(withCredentials(err, opts))
}

// blobName names a blob of a repository, as every registry message does:
// "blob sha256:… of REPO".
func blobName(repo, digest string) string {
	return "blob " + digest + " of " + repo
}

// requestName names what a registry API request to u transfers, without
// its query (an upload URL carries a _state token) or upload session id:
// "blob upload to REPO", "blob sha256:… of REPO", "manifest REPO:TAG";
// "" for a URL that is not of the registry API.
func requestName(u *url.URL) string {
	p, ok := strings.CutPrefix(u.Path, "/v2/")
	if !ok {
		return ""
	}
	if i := strings.Index(p, "/blobs/uploads"); i >= 0 {
		if d := u.Query().Get("digest"); d != "" {
			return "upload of " + blobName(p[:i], d)
		}
		return "blob upload to " + p[:i]
	}
	if i := strings.LastIndex(p, "/blobs/"); i >= 0 {
		return blobName(p[:i], p[i+len("/blobs/"):])
	}
	if i := strings.LastIndex(p, "/manifests/"); i >= 0 {
		return "manifest " + p[:i] + ":" + p[i+len("/manifests/"):]
	}
	if p == "" {
		return "registry API check"
	}
	return "registry request about " + p
}

// WithoutURLs returns err with every registry request URL in its message
// (net/http's `Patch "https://…/blobs/uploads/ID?_state=…": …`) replaced
// by what the request transfers ("blob upload to REPO: …"): upload URLs
// carry session tokens, and people want the repository and blob. err
// still matches what it wrapped (errors.Is, errors.As).
func WithoutURLs(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	walkErrors(err, func(e error) {
		ue, ok := e.(*url.Error)
		if !ok {
			return
		}
		u, perr := url.Parse(ue.URL)
		if perr != nil {
			return
		}
		what := requestName(u)
		if what == "" {
			return
		}
		if s := ue.Error(); strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, what+": "+ue.Err.Error())
			changed = true
		}
	})
	if !changed {
		return err
	}
	return &rewordedError{err: err, msg: msg}
}

// walkErrors calls f on err and every error it wraps.
func walkErrors(err error, f func(error)) {
	for err != nil {
		f(err)
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walkErrors(e, f)
			}
			return
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return
		}
	}
}

// rewordedError is err with another message.
type rewordedError struct {
	err error
	msg string
}

func (e *rewordedError) Error() string { return e.msg }
func (e *rewordedError) Unwrap() error { return e.err }

// blobRef renders the blob a registry URL is about as REPO@DIGEST (the
// digest from the path or the upload's digest parameter), or "REPO" for
// an upload whose digest is not known yet: messages name the repository
// and blob, never the URL (an upload URL carries the session's state).
func blobRef(u *url.URL) string {
	p := strings.TrimPrefix(u.Path, "/v2/")
	i := strings.LastIndex(p, "/blobs/")
	if i < 0 {
		return p
	}
	repo, rest := p[:i], p[i+len("/blobs/"):]
	d := u.Query().Get("digest")
	if !strings.HasPrefix(rest, "uploads") {
		d = rest
	}
	if d == "" {
		return repo
	}
	return repo + "@" + d
}

// withoutURL drops the request URL net/http puts around a transfer error
// of this package's (which names the registry and blob already).
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && errors.Is(ue.Err, ErrTransfer) {
		return ue.Err
	}
	return err
}
