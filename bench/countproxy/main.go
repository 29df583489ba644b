// Command countproxy is a reverse proxy in front of a registry that counts
// the blob bytes going each way, so bench/run.sh can print what a post-run
// downloaded and uploaded. GET /_stats returns the counts as JSON; POST
// /_reset zeroes them.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
)

type stats struct {
	mu                sync.Mutex
	BlobBytesDown     int64 `json:"blobBytesDown"`
	BlobBytesUp       int64 `json:"blobBytesUp"`
	ManifestBytesDown int64 `json:"manifestBytesDown"`
	ManifestBytesUp   int64 `json:"manifestBytesUp"`
	BlobGets          int   `json:"blobGets"`
	Mounts            int   `json:"mounts"`
	Requests          int   `json:"requests"`
}

type countingBody struct {
	io.ReadCloser
	n *int64
	s *stats
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.s.mu.Lock()
	*c.n += int64(n)
	c.s.mu.Unlock()
	return n, err
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	target := flag.String("target", "", "registry base URL, e.g. http://127.0.0.1:5000")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || *target == "" {
		log.Fatalf("countproxy: -target: %v", err)
	}
	var s stats
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		p := r.Request.URL.Path
		if r.Request.Method == http.MethodGet {
			switch {
			case strings.Contains(p, "/blobs/sha256:"):
				s.mu.Lock()
				s.BlobGets++
				s.mu.Unlock()
				r.Body = countingBody{r.Body, &s.BlobBytesDown, &s}
			case strings.Contains(p, "/manifests/"):
				r.Body = countingBody{r.Body, &s.ManifestBytesDown, &s}
			}
		}
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_stats", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		json.NewEncoder(w).Encode(&s)
	})
	mux.HandleFunc("/_reset", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		s.BlobBytesDown, s.BlobBytesUp, s.ManifestBytesDown, s.ManifestBytesUp, s.BlobGets, s.Mounts, s.Requests = 0, 0, 0, 0, 0, 0, 0
		s.mu.Unlock()
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.Requests++
		if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
			s.Mounts++
		}
		s.mu.Unlock()
		switch {
		case r.Body == nil || r.Body == http.NoBody:
		case (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/"):
			r.Body = countingBody{r.Body, &s.BlobBytesUp, &s}
		case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/"):
			r.Body = countingBody{r.Body, &s.ManifestBytesUp, &s}
		}
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: *listen, Handler: mux}
	log.Fatal(srv.ListenAndServe())
}
