// Package faultproxy is an HTTP reverse proxy for tests that injects
// network faults between a client and a server on 127.0.0.1 (typically
// internal/testreg's registry): drop the connection after N bytes of a
// response or request body, answer a 5xx status, stall (stop sending
// mid-body and hold the connection), or flip a byte of a response body.
//
// Each fault applies to the Nth request that matches it (or to every
// matching request), so that a test can fail one transfer and let its
// retry through.
package faultproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Kind is what a fault does.
type Kind int

// The faults.
const (
	// Drop closes the connection after Bytes bytes of the response body
	// (or, for a request with a body, after reading Bytes bytes of it,
	// before any answer).
	Drop Kind = iota + 1
	// Status answers Code without forwarding the request (its body is
	// read and discarded first, as a real server's error page would).
	Status
	// Stall sends the response header and Bytes bytes of the body (or,
	// for a request with a body, reads Bytes bytes of it) and then holds
	// the connection open without sending or reading anything, until the
	// client goes away or the proxy is closed.
	Stall
	// Flip forwards the response with the byte at offset Bytes of the body
	// inverted.
	Flip
)

func (k Kind) String() string {
	switch k {
	case Drop:
		return "drop"
	case Status:
		return "status"
	case Stall:
		return "stall"
	case Flip:
		return "flip"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Fault describes one fault and the requests it applies to.
type Fault struct {
	Kind Kind
	// Method matches the request method ("" = any).
	Method string
	// Path matches requests whose URL path contains it ("" = any).
	Path string
	// Nth applies the fault to the Nth matching request only (1 = the
	// first); 0 applies it to every matching request.
	Nth int
	// Bytes is the body offset for Drop, Stall and Flip.
	Bytes int64
	// Code is the status for Status (default 503).
	Code int
	// OnRequest body bytes instead of response body bytes (Drop, Stall).
	// Only requests with a body are matched when set.
	OnRequest bool
}

func (f Fault) String() string {
	s := f.Kind.String()
	if f.Method != "" || f.Path != "" {
		s += fmt.Sprintf(" on %s *%s*", f.Method, f.Path)
	}
	return s
}

func (f Fault) matches(r *http.Request) bool {
	if f.Method != "" && !strings.EqualFold(f.Method, r.Method) {
		return false
	}
	if f.Path != "" && !strings.Contains(r.URL.Path, f.Path) {
		return false
	}
	if f.OnRequest && r.ContentLength == 0 {
		return false
	}
	return true
}

// Proxy is a running fault proxy.
type Proxy struct {
	// Host is "127.0.0.1:PORT" of the proxy.
	Host string

	proxy *httputil.ReverseProxy
	srv   *http.Server
	stop  chan struct{}

	mu     sync.Mutex
	faults []*entry
	hook   func(*http.Request)
}

type entry struct {
	Fault
	seen, fired int
}

// Start runs a proxy on a free 127.0.0.1 port that forwards to target
// ("http://127.0.0.1:PORT"), keeping the client's Host header (so that a
// registry's Location headers point back at the proxy), and stops it in
// t.Cleanup.
func Start(t testing.TB, target string, faults ...Fault) *Proxy {
	t.Helper()
	p, err := New(target, faults...)
	if err != nil {
		t.Fatalf("faultproxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// New is Start without a testing.TB; call Close when done.
func New(target string, faults ...Fault) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("target %q: want http://HOST:PORT", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Host: ln.Addr().String(), stop: make(chan struct{})}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// A client that went away (stall, drop) is no error of the proxy.
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	for _, f := range faults {
		p.Add(f)
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL returns http://Host.
func (p *Proxy) URL() string { return "http://" + p.Host }

// Add adds a fault; it returns its index for Fired.
func (p *Proxy) Add(f Fault) int {
	if f.Kind == Status && f.Code == 0 {
		f.Code = http.StatusServiceUnavailable
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &entry{Fault: f})
	return len(p.faults) - 1
}

// Clear removes all faults.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// Fired says how many times fault i was applied.
func (p *Proxy) Fired(i int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults[i].fired
}

// Hook sets a function called (in the proxy's goroutine, before the fault
// check) for every request; nil removes it.
func (p *Proxy) Hook(h func(*http.Request)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = h
}

// Close stops the proxy and releases stalled connections.
func (p *Proxy) Close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
}

// pick returns the fault that applies to r, if any.
func (p *Proxy) pick(r *http.Request) (Fault, bool) {
	p.mu.Lock()
	hook := p.hook
	var out *entry
	for _, e := range p.faults {
		if !e.matches(r) {
			continue
		}
		e.seen++
		if out == nil && (e.Nth == 0 || e.Nth == e.seen) {
			out = e
		}
	}
	if out != nil {
		out.fired++
	}
	p.mu.Unlock()
	if hook != nil {
		hook(r)
	}
	if out == nil {
		return Fault{}, false
	}
	return out.Fault, true
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	f, ok := p.pick(r)
	if !ok {
		p.proxy.ServeHTTP(w, r)
		return
	}
	switch {
	case f.Kind == Status:
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Code)
		fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"faultproxy: injected %d"}]}`, f.Code)
	case f.OnRequest && f.Kind == Drop:
		_, _ = io.CopyN(io.Discard, r.Body, f.Bytes)
		panic(http.ErrAbortHandler) // closes the connection
	case f.OnRequest && f.Kind == Stall:
		_, _ = io.CopyN(io.Discard, r.Body, f.Bytes)
		p.hold(r)
		panic(http.ErrAbortHandler)
	default:
		p.proxy.ServeHTTP(&faultWriter{ResponseWriter: w, f: f, p: p, r: r}, r)
	}
}

// hold blocks until the client goes away or the proxy closes.
func (p *Proxy) hold(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-p.stop:
	}
}

// faultWriter applies a response-body fault to what the reverse proxy writes.
type faultWriter struct {
	http.ResponseWriter
	f   Fault
	p   *Proxy
	r   *http.Request
	off int64
}

func (w *faultWriter) Write(b []byte) (int, error) {
	end := w.off + int64(len(b))
	switch w.f.Kind {
	case Flip:
		if w.f.Bytes >= w.off && w.f.Bytes < end {
			c := append([]byte(nil), b...)
			c[w.f.Bytes-w.off] ^= 0xff
			b = c
		}
	case Drop, Stall:
		if end > w.f.Bytes {
			n := w.f.Bytes - w.off
			if n > 0 {
				if _, err := w.ResponseWriter.Write(b[:n]); err != nil {
					return 0, err
				}
			}
			w.Flush()
			if w.f.Kind == Stall {
				w.p.hold(w.r)
			}
			panic(http.ErrAbortHandler) // closes the connection mid-body
		}
	}
	n, err := w.ResponseWriter.Write(b)
	w.off += int64(n)
	return n, err
}

func (w *faultWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
