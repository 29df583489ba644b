package oci

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/phtoci/phtoci/internal/units"
)

// upload sends a streamed blob (PATCH), keeping what was read in a spool
// (unlinked at once) so that after a drop, a stall or a 5xx it can be sent
// again, in a new upload session, with backoff.
func (t *reliable) upload(req *http.Request) (*http.Response, error) {
	sp := newSpool(t.tmpDir, req.Body)
	defer sp.close()
	loc := req.URL
	for i := 0; ; i++ {
		r := req.Clone(req.Context())
		r.URL, r.Host = loc, ""
		r.Body, r.GetBody = io.NopCloser(sp.replay()), nil
		resp, err := t.attempt(r)
		var what string
		switch {
		case sp.srcErr != nil:
			// The producer failed; its error explains, not the upload's.
			if resp != nil {
				drain(resp)
			}
			return nil, sp.srcErr
		case err != nil && (req.Context().Err() != nil || !transient(err)):
			return nil, err
		case err != nil:
			what = t.describe(err)
		case retryStatus(resp.StatusCode):
			what = resp.Status
		default:
			return resp, nil
		}
		if i == transferRetries || req.Context().Err() != nil {
			if resp != nil {
				return resp, nil
			}
			return nil, t.fail(req, what, err, sp.n, i)
		}
		if sp.lost != nil {
			if resp != nil {
				drain(resp)
			}
			return nil, fmt.Errorf("registry %s: %s after %s of %s, not sent again: %v: %w", req.URL.Host, what, units.Bytes(sp.n), subject(req), sp.lost, ErrTransfer)
		}
		if resp != nil {
			drain(resp)
		}
		if err := sleep(req.Context(), transferBackoff(i)); err != nil {
			return nil, err
		}
		if loc, err = t.newSession(req); err != nil {
			return nil, err
		}
	}
}

// newSession starts a new upload in the repository of the upload req.
func (t *reliable) newSession(req *http.Request) (*url.URL, error) {
	p := req.URL.Path
	i := strings.Index(p, "/blobs/uploads/")
	u := *req.URL
	u.Path, u.RawPath, u.RawQuery = p[:i]+"/blobs/uploads/", "", ""
	r, err := http.NewRequestWithContext(req.Context(), http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for _, h := range []string{"Authorization", "User-Agent"} {
		if v := req.Header.Get(h); v != "" {
			r.Header.Set(h, v)
		}
	}
	resp, err := t.retrying(r)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("registry %s: starting a new %s after a failed one: %s: %w", req.URL.Host, subject(req), resp.Status, ErrTransfer)
	}
	loc, err := u.Parse(resp.Header.Get("Location"))
	if err != nil {
		return nil, fmt.Errorf("registry %s: upload location %q: %v: %w", req.URL.Host, resp.Header.Get("Location"), err, ErrTransfer)
	}
	return loc, nil
}

// spool keeps what was read from a source that can be read once, in a
// file that is unlinked as soon as it is made (private: 0600, and gone
// when the process is), so that it can be read again from the start. A
// spool that cannot be made or written (a full disk) does not stop the
// upload: it only cannot be sent again (lost says why).
type spool struct {
	f      *os.File
	src    io.Reader
	n      int64 // bytes of the source read (and, unless lost, in f)
	srcErr error // the source's error, other than EOF
	eof    bool
	lost   error // why the spool does not hold the bytes read
}

func newSpool(dir string, src io.Reader) *spool {
	s := &spool{src: src}
	f, err := os.CreateTemp(dir, "phtoci-upload-*")
	if err != nil {
		s.lost = fmt.Errorf("no spool to send it again from: %w", err)
		return s
	}
	os.Remove(f.Name())
	s.f = f
	return s
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
	}
	if c, ok := s.src.(io.Closer); ok {
		c.Close()
	}
}

// replay returns a reader of the source from its start.
func (s *spool) replay() io.Reader { return &spoolReader{s: s} }

type spoolReader struct {
	s   *spool
	pos int64
}

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	if r.pos < s.n {
		if int64(len(p)) > s.n-r.pos {
			p = p[:s.n-r.pos]
		}
		n, err := s.f.ReadAt(p, r.pos)
		r.pos += int64(n)
		if err == io.EOF && n > 0 {
			err = nil
		}
		return n, err
	}
	if s.eof {
		return 0, io.EOF
	}
	if s.srcErr != nil {
		return 0, s.srcErr
	}
	// Fill p before writing it to the spool: one write per piece the
	// transport asks for (1 MiB, see WriteTo), not one per read of the
	// source (a pipe hands over a few KiB at a time).
	n, err := io.ReadFull(s.src, p)
	if n > 0 {
		if s.lost == nil {
			if _, werr := s.f.WriteAt(p[:n], s.n); werr != nil {
				s.lost = fmt.Errorf("the spool to send it again from could not be written: %w", werr)
				s.f.Truncate(0) // give the space back
			}
		}
		s.n += int64(n)
		r.pos += int64(n)
	}
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		s.eof = true
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	case err != nil:
		s.srcErr = err
	}
	return n, err
}
