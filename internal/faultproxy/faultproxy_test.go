package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// backend serves 1 MiB of a pattern on GET /blob and counts the bytes of
// request bodies on PUT /up.
func backend(t *testing.T) (*httptest.Server, []byte, *int64) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	var up int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/blob":
			w.Header().Set("Content-Length", "1048576")
			_, _ = w.Write(body)
		case "/up":
			n, _ := io.Copy(io.Discard, r.Body)
			up += n
			w.WriteHeader(http.StatusCreated)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, body, &up
}

func get(t *testing.T, url string, timeout time.Duration) ([]byte, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp, err
}

func TestFaults(t *testing.T) {
	srv, body, up := backend(t)

	t.Run("pass-through", func(t *testing.T) {
		p := Start(t, srv.URL)
		b, _, err := get(t, p.URL()+"/blob", 10*time.Second)
		if err != nil || !bytes.Equal(b, body) {
			t.Fatalf("got %d bytes, err %v; want the 1 MiB body", len(b), err)
		}
	})

	t.Run("drop after N bytes, Nth request only", func(t *testing.T) {
		p := Start(t, srv.URL, Fault{Kind: Drop, Path: "/blob", Nth: 2, Bytes: 300_000})
		if b, _, err := get(t, p.URL()+"/blob", 10*time.Second); err != nil || len(b) != len(body) {
			t.Fatalf("first request: %d bytes, %v; want it untouched", len(b), err)
		}
		b, _, err := get(t, p.URL()+"/blob", 10*time.Second)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != 300_000 || !bytes.Equal(b, body[:300_000]) {
			t.Fatalf("second request: %d bytes, %v; want 300000 bytes and unexpected EOF", len(b), err)
		}
		if b, _, err := get(t, p.URL()+"/blob", 10*time.Second); err != nil || len(b) != len(body) {
			t.Fatalf("third request: %d bytes, %v; want it untouched", len(b), err)
		}
		if p.Fired(0) != 1 {
			t.Fatalf("fired %d times, want 1", p.Fired(0))
		}
	})

	t.Run("status", func(t *testing.T) {
		p := Start(t, srv.URL, Fault{Kind: Status, Method: http.MethodGet, Nth: 1})
		_, resp, err := get(t, p.URL()+"/blob", 10*time.Second)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("got %v, %v; want 503", resp, err)
		}
		if _, resp, err = get(t, p.URL()+"/blob", 10*time.Second); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("second request: %v, %v; want 200", resp, err)
		}
	})

	t.Run("stall holds the connection", func(t *testing.T) {
		p := Start(t, srv.URL, Fault{Kind: Stall, Path: "/blob", Bytes: 1000})
		b, _, err := get(t, p.URL()+"/blob", 500*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) || len(b) != 1000 {
			t.Fatalf("got %d bytes, %v; want 1000 bytes, then the client's deadline", len(b), err)
		}
	})

	t.Run("flip", func(t *testing.T) {
		p := Start(t, srv.URL, Fault{Kind: Flip, Bytes: 123_456})
		b, _, err := get(t, p.URL()+"/blob", 10*time.Second)
		if err != nil || len(b) != len(body) {
			t.Fatalf("got %d bytes, %v", len(b), err)
		}
		for i := range b {
			if want := i == 123_456; (b[i] != body[i]) != want {
				t.Fatalf("byte %d: got %#x, body has %#x", i, b[i], body[i])
			}
		}
	})

	t.Run("drop request body", func(t *testing.T) {
		p := Start(t, srv.URL, Fault{Kind: Drop, Method: http.MethodPut, OnRequest: true, Bytes: 4096})
		*up = 0
		req, _ := http.NewRequest(http.MethodPut, p.URL()+"/up", strings.NewReader(strings.Repeat("x", 1<<20)))
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("upload got %s; want the connection dropped", resp.Status)
		}
		if *up != 0 {
			t.Fatalf("backend got %d bytes; want none", *up)
		}
	})
}
