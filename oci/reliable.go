package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/phtoci/phtoci/internal/units"
)

// transferRetries is how many times a stalled or dropped transfer is tried
// again; transferBackoff is the wait before retry i (1s, 2s, 4s).
const transferRetries = 3

var transferBackoff = func(i int) time.Duration { return time.Second << i }

// errStalled is the cause a watchdog cancels a request with.
var errStalled = errors.New("stalled")

// reliable is the innermost registry transport (under go-containerregistry's
// auth and retry wrappers, so requests reach it with their credentials).
// Every request has a no-progress timeout; requests that can be sent again
// are retried after a stall or a dropped connection; a GET whose body breaks
// off is resumed with a Range request; a streamed blob upload (a PATCH whose
// body cannot be read twice) is spooled while it is sent and sent again
// from the spool, in a new upload session, after a drop, a stall or a 5xx.
type reliable struct {
	next   http.RoundTripper
	stall  time.Duration
	tmpDir string
}

func newReliable(next http.RoundTripper, opts Options) *reliable {
	d := opts.StallTimeout
	if d <= 0 {
		d = DefaultStallTimeout
	}
	return &reliable{next: next, stall: d, tmpDir: opts.TempDir}
}

func (t *reliable) RoundTrip(req *http.Request) (*http.Response, error) {
	if isStreamUpload(req) {
		return t.upload(req)
	}
	resp, err := t.retrying(req)
	if err != nil {
		return nil, err
	}
	if req.Method == http.MethodGet && resp.StatusCode == http.StatusOK {
		resp.Body = &resumingBody{t: t, req: req, rc: resp.Body}
	}
	return resp, nil
}

// isStreamUpload: a PATCH of blob data whose body cannot be had again: no
// GetBody, or (go-containerregistry sets GetBody to the layer's
// Compressed, which a streaming layer answers only once) no known length.
func isStreamUpload(req *http.Request) bool {
	return req.Method == http.MethodPatch && (req.GetBody == nil || req.ContentLength <= 0) &&
		req.Body != nil && req.Body != http.NoBody && strings.Contains(req.URL.Path, "/blobs/uploads/")
}

func isUploadRequest(req *http.Request) bool {
	return strings.Contains(req.URL.Path, "/blobs/uploads/")
}

func retryStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retrying sends req, again after a stall or a dropped connection when its
// body can be had again, and (for upload requests, which
// go-containerregistry does not retry on their own) after a 5xx.
func (t *reliable) retrying(req *http.Request) (*http.Response, error) {
	// A PATCH of blob data is not sent again in the same upload session
	// (the registry may have kept part of it): go-containerregistry starts
	// the upload over (a stall is Temporary for it), or upload does.
	replayable := (req.Body == nil || req.Body == http.NoBody || req.GetBody != nil) && req.Method != http.MethodPatch
	for i := 0; ; i++ {
		r := req
		if i > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r = req.Clone(req.Context())
			r.Body = body
		}
		resp, err := t.attempt(r)
		var what string
		switch {
		case err != nil && req.Context().Err() != nil:
			return nil, err
		case err != nil && (!replayable || !transient(err)):
			return nil, err
		case err != nil:
			what = t.describe(err)
		case isUploadRequest(req) && retryStatus(resp.StatusCode) && replayable:
			what = resp.Status
		default:
			return resp, nil
		}
		if i == transferRetries || req.Context().Err() != nil {
			if resp != nil {
				return resp, nil // go-containerregistry reports the status
			}
			return nil, t.fail(req, what, err, 0, i)
		}
		if resp != nil {
			drain(resp)
		}
		if err := sleep(req.Context(), transferBackoff(i)); err != nil {
			return nil, err
		}
	}
}

// attempt sends req once under a watchdog: the request is cancelled when
// the connection makes no progress for t.stall while phtoci waits on it.
// The response body keeps the watchdog (armed only inside Read).
func (t *reliable) attempt(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	wd := &watchdog{d: t.stall, cancel: cancel}
	r := req.Clone(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &watchedRequestBody{rc: r.Body, wd: wd}
	}
	wd.arm()
	resp, err := t.next.RoundTrip(r)
	wd.stop()
	if err != nil {
		stalled := context.Cause(ctx) == errStalled
		cancel(nil)
		if stalled {
			return nil, stallError{err}
		}
		return nil, err
	}
	resp.Body = &watchedBody{rc: resp.Body, wd: wd, ctx: ctx, cancel: cancel}
	return resp, nil
}

// fail is the error after the last retry.
func (t *reliable) fail(req *http.Request, what string, cause error, off int64, retries int) error {
	sentinel := ErrTransfer
	if errors.As(cause, new(stallError)) {
		sentinel = ErrStall
	}
	at := ""
	if off > 0 {
		at = " after " + units.Bytes(off) + " of"
	} else {
		at = " on"
	}
	return fmt.Errorf("registry %s: %s%s %s, retried %d times: %w", req.URL.Host, what, at, subject(req), retries, sentinel)
}

// describe says what happened to a connection, in a few words.
func (t *reliable) describe(err error) string {
	var se stallError
	switch {
	case errors.As(err, &se):
		return "no data for " + t.stall.String() + " (stall timeout)"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, net.ErrClosed):
		return "connection broken"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed early"
	}
	return err.Error()
}

// transient: errors worth another try (stalls and dropped connections; not
// a refused connection or a name that does not resolve).
func transient(err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, new(stallError)),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, net.ErrClosed): // net/http closed it on the server's early close
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

// subject names what a request transfers: "blob sha256:…", "manifest
// TAG", "blob upload to REPO".
func subject(req *http.Request) string {
	p := req.URL.Path
	if strings.Contains(p, "/blobs/uploads") {
		return "blob upload to " + blobRef(req.URL)
	}
	if i := strings.LastIndex(p, "/blobs/"); i >= 0 {
		return "blob " + p[i+len("/blobs/"):]
	}
	if i := strings.LastIndex(p, "/manifests/"); i >= 0 {
		return "manifest " + strings.TrimPrefix(p[:i], "/v2/") + ":" + p[i+len("/manifests/"):]
	}
	return p
}

func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// stallError is a request that the watchdog cancelled.
type stallError struct{ err error }

func (e stallError) Error() string { return "stalled: " + e.err.Error() }

// Temporary makes go-containerregistry retry what phtoci does not.
func (e stallError) Temporary() bool { return true }
func (e stallError) Unwrap() error   { return e.err }

// watchdog cancels a request when it is armed for d without being
// disarmed. It is armed while phtoci waits on the network: for the
// response header, inside reads of the response body, and between the
// transport's reads of the request body (the network has not taken the
// last piece yet).
type watchdog struct {
	d      time.Duration
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	t       *time.Timer
	stopped bool // the request is answered: request-body reads no longer arm
}

func (w *watchdog) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t == nil {
		w.t = time.AfterFunc(w.d, func() { w.cancel(errStalled) })
		return
	}
	w.t.Reset(w.d)
}

func (w *watchdog) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t != nil {
		w.t.Stop()
	}
}

// armFromBody arms unless the request is answered already.
func (w *watchdog) armFromBody() {
	w.mu.Lock()
	stopped := w.stopped
	w.mu.Unlock()
	if !stopped {
		w.arm()
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.disarm()
}

type watchedRequestBody struct {
	rc io.ReadCloser
	wd *watchdog
}

func (b *watchedRequestBody) Read(p []byte) (int, error) {
	b.wd.disarm() // the network took the last piece; the source may be slow
	n, err := b.rc.Read(p)
	b.wd.armFromBody()
	return n, err
}

// WriteTo sends the body in pieces of uploadChunk bytes (net/http's copy
// uses it; see ChunkedUpload).
func (b *watchedRequestBody) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, uploadChunk)
	var total int64
	for {
		b.wd.disarm()
		n, err := io.ReadFull(b.rc, buf)
		b.wd.armFromBody()
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (b *watchedRequestBody) Close() error { return b.rc.Close() }

type watchedBody struct {
	rc     io.ReadCloser
	wd     *watchdog
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.wd.arm()
	n, err := b.rc.Read(p)
	b.wd.disarm()
	if err != nil && err != io.EOF && context.Cause(b.ctx) == errStalled {
		err = stallError{err}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.wd.disarm()
	b.cancel(nil)
	return err
}

// resumingBody is a GET's body that, when the connection drops or stalls,
// asks for the rest (Range) and goes on, up to transferRetries times.
type resumingBody struct {
	t       *reliable
	req     *http.Request
	rc      io.ReadCloser
	off     int64
	retries int
}

func (b *resumingBody) Read(p []byte) (int, error) {
	for {
		n, err := b.rc.Read(p)
		b.off += int64(n)
		if err == nil || err == io.EOF || !transient(err) || b.req.Context().Err() != nil {
			return n, err
		}
		if rerr := b.resume(err); rerr != nil {
			return n, rerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// resume replaces the body with one that starts at b.off.
func (b *resumingBody) resume(cause error) error {
	b.rc.Close()
	b.rc = io.NopCloser(strings.NewReader(""))
	for {
		if b.retries == transferRetries {
			return b.t.fail(b.req, b.t.describe(cause), cause, b.off, b.retries)
		}
		if err := sleep(b.req.Context(), transferBackoff(b.retries)); err != nil {
			return err
		}
		b.retries++
		r := b.req.Clone(b.req.Context())
		if b.off > 0 {
			r.Header.Set("Range", fmt.Sprintf("bytes=%d-", b.off))
		}
		resp, err := b.t.attempt(r)
		if err != nil {
			if !transient(err) {
				return err
			}
			cause = err
			continue
		}
		switch {
		case resp.StatusCode == http.StatusPartialContent && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", b.off)):
			b.rc = resp.Body
			return nil
		case resp.StatusCode == http.StatusOK:
			// No ranges: read again from the start and skip what was had.
			if _, err := io.CopyN(io.Discard, resp.Body, b.off); err != nil {
				resp.Body.Close()
				if !transient(err) {
					return err
				}
				cause = err
				continue
			}
			b.rc = resp.Body
			return nil
		case retryStatus(resp.StatusCode):
			cause = errors.New(resp.Status)
			drain(resp)
			continue
		}
		drain(resp)
		return fmt.Errorf("registry %s: resuming %s at byte %d: %s: %w", b.req.URL.Host, subject(b.req), b.off, resp.Status, ErrTransfer)
	}
}

func (b *resumingBody) Close() error { return b.rc.Close() }
