package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
	"gopkg.in/yaml.v3"
)

// ServeConfig is `phtoci serve --config serve.yaml`:
//
//	listen: 127.0.0.1:8080
//	tls: {cert: server.crt, key: server.key}   # optional
//	secret_file: secret.txt                    # or secret: "Bearer …"; must equal the Authorization header
//	store: verdicts.db
//	max_body: 1048576
//	workers: 2
//	queue: 1024
//	retries: 3
//	trust: trust.json                          # optional trust store (see package trust)
//	registry: harbor.example                   # optional: host to verify against instead of the event's
//	username: robot$phtoci                     # optional registry credentials
//	password_file: robot.txt
//	insecure: false
type ServeConfig struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	Secret       string `yaml:"secret"`
	SecretFile   string `yaml:"secret_file"`
	Store        string `yaml:"store"`
	MaxBody      int64  `yaml:"max_body"`
	Workers      int    `yaml:"workers"`
	Queue        int    `yaml:"queue"`
	Retries      int    `yaml:"retries"`
	Trust        string `yaml:"trust"`
	Registry     string `yaml:"registry"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	Insecure     bool   `yaml:"insecure"`
	// Route is the optional routing policy.
	Route *RoutePolicy `yaml:"route"`
	// Limits raise limits on what a pushed image may cost, by name
	// (train.LimitNames: layers, manifest-size, ...).
	Limits map[string]string `yaml:"limits"`
}

// LoadServeConfig reads and checks a serve config file.
func LoadServeConfig(path string) (*ServeConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("serve config: %w", err)
	}
	var c ServeConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("serve config %s: %w", path, err)
	}
	if c.SecretFile != "" {
		s, err := os.ReadFile(c.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("serve config secret_file: %w", err)
		}
		c.Secret = strings.TrimRight(string(s), "\r\n")
	}
	switch {
	case c.Listen == "":
		return nil, fmt.Errorf("serve config %s: listen: missing", path)
	case c.Secret == "":
		return nil, fmt.Errorf("serve config %s: secret or secret_file: missing (a shared secret is required)", path)
	case c.Store == "":
		return nil, fmt.Errorf("serve config %s: store: missing", path)
	case (c.TLS.Cert == "") != (c.TLS.Key == ""):
		return nil, fmt.Errorf("serve config %s: tls: give both cert and key", path)
	}
	for name, v := range c.Limits {
		if err := new(train.Env).SetLimit(name, v); err != nil {
			return nil, fmt.Errorf("serve config %s: limits: %w", path, err)
		}
	}
	return &c, nil
}

// Run serves until ctx is cancelled, then shuts down gracefully: it stops
// taking events, lets the workers finish the artifact each is on and keeps
// the rest of the queue in the store for the next start. ready, when not
// nil, receives the listening address.
func Run(ctx context.Context, c *ServeConfig, ready chan<- string) error {
	st, err := OpenStore(c.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	env := train.Env{OCI: oci.Options{Insecure: c.Insecure, Quiet: true}}
	for name, v := range c.Limits {
		if err := env.SetLimit(name, v); err != nil {
			return err
		}
	}
	if c.Trust != "" {
		if env.Trust, err = trust.Load(c.Trust); err != nil {
			return err
		}
	}
	if c.Username != "" {
		p, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return fmt.Errorf("serve config password_file: %w", err)
		}
		env.OCI.Auth = oci.BasicAuth(c.Username, strings.TrimRight(string(p), "\r\n"))
	}
	s, err := New(Config{Secret: c.Secret, Verifier: TrainVerifier{Env: env}, Store: st, MaxBody: c.MaxBody,
		Workers: c.Workers, QueueSize: c.Queue, Retries: c.Retries, Registry: c.Registry,
		Route: c.Route, Copier: OCICopier{Options: env.OCI}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() {
		if c.TLS.Cert != "" {
			errc <- hs.ServeTLS(ln, c.TLS.Cert, c.TLS.Key)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		s.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	herr := hs.Shutdown(sctx)
	if err := s.Shutdown(sctx); err != nil {
		return err
	}
	if herr != nil && !errors.Is(herr, http.ErrServerClosed) {
		return herr
	}
	return nil
}
