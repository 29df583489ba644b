package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
	"golang.org/x/net/netutil"
	"gopkg.in/yaml.v3"
)

// ServeConfig is `phtoci serve --config serve.yaml`:
//
//	listen: 127.0.0.1:8080
//	tls: {cert: server.crt, key: server.key}   # optional
//	secret_file: secret.txt                    # or secret: "Bearer …"; must equal the Authorization header
//	store: verdicts.db                         # or postgres://user@host:5432/db?sslmode=verify-full (replicas)
//	store_file: /run/secrets/dsn               # or the store read from a file (a DSN with its password)
//	lease: 2m                                  # a replica's hold on an artifact it verifies
//	max_body: 1048576
//	workers: 2
//	queue: 1024
//	retries: 3
//	trust: trust.json                          # optional trust store (see package trust)
//	registry: harbor.example                   # the registry every event is verified against, or
//	registries: {harbor.example: harbor.internal:443}  # event host → registry (other hosts refused)
//	username: robot$phtoci                     # optional credentials, sent to the configured registries only
//	password_file: robot.txt
//	read_secret_file: read.txt                 # Authorization for GET /v1/verdicts, /v1/trains, / and /metrics
//	public_read: false                         # instead of read_secret: reads open to anyone (warned at start)
//	allow_untrusted: false                     # without trust: verify any self-signed train (warned, on the status page and in metrics)
//	verify_timeout: 5m                         # per verification attempt
//	stall_timeout: 60s                         # a registry connection without progress is retried after this
//	retry_window: 1h                           # errors are retried with backoff this long
//	shutdown_grace: 30s                        # a stop waits this long for verifications in progress
//	read_timeout: 30s                          # HTTP limits (see ServeConfig)
//	write_timeout: 30s
//	idle_timeout: 120s
//	max_header_bytes: 65536
//	max_connections: 256
//	max_connections_per_client: 32
//	read_header_timeout: 5s
//	max_event_targets: 1000
//	insecure: false
type ServeConfig struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	Secret       string            `yaml:"secret"`
	SecretFile   string            `yaml:"secret_file"`
	Store        string            `yaml:"store"`
	MaxBody      int64             `yaml:"max_body"`
	Workers      int               `yaml:"workers"`
	Queue        int               `yaml:"queue"`
	Retries      int               `yaml:"retries"`
	Trust        string            `yaml:"trust"`
	Registry     string            `yaml:"registry"`
	Registries   map[string]string `yaml:"registries"`
	Username     string            `yaml:"username"`
	PasswordFile string            `yaml:"password_file"`
	Insecure     bool              `yaml:"insecure"`
	// ReadSecret (or ReadSecretFile) must equal the Authorization header of
	// GET /v1/verdicts..., /v1/trains/..., the status page and /metrics;
	// required unless PublicRead.
	ReadSecret     string `yaml:"read_secret"`
	ReadSecretFile string `yaml:"read_secret_file"`
	// PublicRead opens the read endpoints to anyone instead (required
	// without a read secret; warned at start).
	PublicRead bool `yaml:"public_read"`
	// AllowUntrusted lets serve start without Trust: any self-signed
	// train is then verified (warned at start, shown on the status page
	// and as phtoci_webhook_untrusted 1).
	AllowUntrusted bool `yaml:"allow_untrusted"`
	// MaxEventTargets bounds the artifacts one event may name (default
	// 1000; the rest are dropped, logged with the limit's name).
	MaxEventTargets int `yaml:"max_event_targets"`
	// VerifyTimeout bounds one verification attempt (default 5m).
	VerifyTimeout time.Duration `yaml:"verify_timeout"`
	// StallTimeout is how long a registry connection may make no progress
	// before the transfer is retried (default oci.DefaultStallTimeout).
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// Lease is how long a replica holds an artifact it verifies before
	// another may take it over (default 2m).
	Lease time.Duration `yaml:"lease"`
	// RetryWindow is how long errors are retried (default 1h).
	RetryWindow time.Duration `yaml:"retry_window"`
	// ShutdownGrace is how long a stop waits for verifications in
	// progress (default 30s); the rest stays queued.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// HTTP server limits: ReadTimeout bounds reading a request, headers
	// and body (default 30s); WriteTimeout writing the answer (default
	// 30s); IdleTimeout a kept-alive connection between requests (default
	// 120s); MaxHeaderBytes the request headers (default 64 KiB);
	// MaxConnections the connections served at once (default 256; more
	// wait to be accepted); MaxConnectionsPerClient those of one remote
	// address (default 32; more are closed at once); ReadHeaderTimeout
	// reading a request's headers (default 5s).
	ReadTimeout             time.Duration `yaml:"read_timeout"`
	WriteTimeout            time.Duration `yaml:"write_timeout"`
	IdleTimeout             time.Duration `yaml:"idle_timeout"`
	ReadHeaderTimeout       time.Duration `yaml:"read_header_timeout"`
	MaxHeaderBytes          int           `yaml:"max_header_bytes"`
	MaxConnections          int           `yaml:"max_connections"`
	MaxConnectionsPerClient int           `yaml:"max_connections_per_client"`
	// Route is the optional routing policy; it needs a trust store that
	// pins the creators.
	Route *RoutePolicy `yaml:"route"`
	// Limits raise limits on what a pushed image may cost, by name
	// (train.Env.SetLimit: layers, manifest-size, ...).
	Limits map[string]string `yaml:"limits"`
	// StoreFile, instead of Store, names a file holding the store (a
	// PostgreSQL URL with its password, from a secret).
	StoreFile string `yaml:"store_file"`
	// Logger receives a line per event and per verdict (not from YAML).
	Logger *slog.Logger `yaml:"-"`
	// Version is the program's version, for the start-up line and
	// phtoci_build_info (not from YAML).
	Version string `yaml:"-"`

	trust *trust.Store
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
	if c.ReadSecretFile != "" {
		s, err := os.ReadFile(c.ReadSecretFile)
		if err != nil {
			return nil, fmt.Errorf("serve config read_secret_file: %w", err)
		}
		c.ReadSecret = strings.TrimRight(string(s), "\r\n")
	}
	if c.StoreFile != "" {
		if c.Store != "" {
			return nil, fmt.Errorf("serve config %s: store and store_file: give one of them", path)
		}
		b, err := os.ReadFile(c.StoreFile)
		if err != nil {
			return nil, fmt.Errorf("serve config store_file: %w", err)
		}
		c.Store = strings.TrimSpace(string(b))
	}
	switch {
	case c.Listen == "":
		return nil, fmt.Errorf("serve config %s: listen: missing", path)
	case c.Secret == "":
		return nil, fmt.Errorf("serve config %s: secret or secret_file: missing (a shared secret is required)", path)
	case c.Store == "":
		return nil, fmt.Errorf("serve config %s: store (or store_file): missing", path)
	case (c.TLS.Cert == "") != (c.TLS.Key == ""):
		return nil, fmt.Errorf("serve config %s: tls: give both cert and key", path)
	case c.Registry == "" && len(c.Registries) == 0:
		return nil, fmt.Errorf("serve config %s: no registry configured: add `registry: HOST[:PORT]` (every event is verified against it) or `registries: {EVENT_HOST: HOST[:PORT]}` (events naming other hosts are refused)", path)
	case c.Registry != "" && len(c.Registries) > 0:
		return nil, fmt.Errorf("serve config %s: registry and registries: give one of them", path)
	}
	for key, v := range c.durations() {
		if *v < 0 {
			return nil, fmt.Errorf("serve config %s: %s: %s is negative", path, key, *v)
		}
		if *v == 0 {
			*v = durationDefaults[key]
		}
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 256
	}
	if c.MaxConnectionsPerClient <= 0 {
		c.MaxConnectionsPerClient = 32
	}
	if c.MaxEventTargets <= 0 {
		c.MaxEventTargets = DefaultMaxEventTargets
	}
	if c.Trust != "" {
		if c.trust, err = trust.Load(c.Trust); err != nil {
			return nil, fmt.Errorf("serve config %s: %w", path, err)
		}
	}
	if c.Route != nil {
		if err := c.Route.Check(c.trust); err != nil {
			return nil, fmt.Errorf("serve config %s: %w", path, err)
		}
	}
	c.Registries = lowerKeys(c.Registries)
	for _, r := range append(c.registryHosts(), c.Registry) {
		if r == "" {
			continue
		}
		if _, err := name.NewRegistry(r, name.StrictValidation); err != nil || strings.ContainsAny(r, "/@") {
			return nil, fmt.Errorf("serve config %s: registry %q: want HOST[:PORT]", path, r)
		}
	}
	// Closed by default: reads need a secret, verification a trust store.
	switch {
	case c.ReadSecret == "" && !c.PublicRead:
		return nil, fmt.Errorf("serve config %s: read_secret (or read_secret_file): missing: verdicts, trains, the status page and metrics are read with it (or set public_read: true to open them to anyone)", path)
	case c.ReadSecret != "" && c.PublicRead:
		return nil, fmt.Errorf("serve config %s: read_secret and public_read: give one of them", path)
	case c.Trust == "" && !c.AllowUntrusted:
		return nil, fmt.Errorf("serve config %s: trust: missing: without a trust store any self-signed train is verified (set allow_untrusted: true to run so)", path)
	}
	for name, v := range c.Limits {
		if err := new(train.Env).SetLimit(name, v); err != nil {
			return nil, fmt.Errorf("serve config %s: limits: %w", path, err)
		}
	}
	return &c, nil
}

// Run serves until ctx is cancelled, then shuts down gracefully: it stops
// taking events, lets the verifications in progress finish within
// ShutdownGrace (abandoning them after it, without a verdict) and keeps
// the rest of the queue in the store for the next start. ready, when not
// nil, receives the listening address.
func Run(ctx context.Context, c *ServeConfig, ready chan<- string) error {
	if c.ReadSecret == "" && !c.PublicRead {
		return errors.New("serve: no read secret: verdicts, trains, the status page and metrics are read with it (or set public_read to open them to anyone)")
	}
	st, err := OpenVerdictStore(ctx, c.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	// Layer summaries live in the store, so replicas on one database
	// read each master layer once between them.
	env := train.Env{OCI: oci.Options{Insecure: c.Insecure, Quiet: true, StallTimeout: c.StallTimeout}}
	env.SummaryCache = StoreSummaryCache{Store: st}
	for name, v := range c.Limits {
		if err := env.SetLimit(name, v); err != nil {
			return err
		}
	}
	if c.trust == nil && c.Trust != "" { // a config not made by LoadServeConfig
		if c.trust, err = trust.Load(c.Trust); err != nil {
			return err
		}
	}
	if c.Route != nil {
		if err := c.Route.Check(c.trust); err != nil {
			return err
		}
	}
	if c.trust == nil && !c.AllowUntrusted {
		return errors.New("serve: no trust store: without one any self-signed train is verified (set allow_untrusted to run so)")
	}
	env.Trust = c.trust
	// Credentials go to the configured registries only: a keychain that
	// answers for their hosts and is anonymous everywhere else
	// (go-containerregistry sends them to that host only, never after a
	// redirect to another one).
	kc, err := c.keychain()
	if err != nil {
		return err
	}
	env.OCI.Keychain = kc
	// One transport for every verification and copy: the connections to
	// each registry are kept and reused (not a new pool per image).
	env.OCI.Transport = oci.NewTransport(env.OCI)
	s, err := New(Config{Secret: c.Secret, Verifier: TrainVerifier{Env: env}, Store: st, MaxBody: c.MaxBody,
		Workers: c.Workers, QueueSize: c.Queue, Retries: c.Retries, Registry: c.Registry, Registries: c.Registries,
		ReadSecret: c.ReadSecret, PublicRead: c.PublicRead, Untrusted: c.trust == nil, MaxEventTargets: c.MaxEventTargets,
		VerifyTimeout: c.VerifyTimeout, Route: c.Route, Copier: OCICopier{Options: env.OCI},
		RetryWindow: c.RetryWindow, Resolver: RegistryResolver{Keychain: kc, Insecure: c.Insecure}, Lease: c.Lease,
		Logger: c.Logger, Version: c.Version})
	if err != nil {
		return err
	}
	logger := c.Logger
	if logger == nil {
		logger = discard
	}
	if c.PublicRead {
		logger.Warn("public_read: verdicts, trains, the status page and metrics are open to anyone who reaches " + c.Listen)
	}
	if c.trust == nil {
		logger.Warn("allow_untrusted: no trust store, so any self-signed train is verified")
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	ln = limitPerClient(netutil.LimitListener(ln, c.MaxConnections), c.MaxConnectionsPerClient)
	hs := &http.Server{Handler: s, ReadHeaderTimeout: headerTimeout(c.ReadHeaderTimeout, c.ReadTimeout), ReadTimeout: c.ReadTimeout,
		WriteTimeout: c.WriteTimeout, IdleTimeout: c.IdleTimeout, MaxHeaderBytes: c.MaxHeaderBytes}
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
	grace := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), c.ShutdownGrace)
	}
	log := c.Logger
	if log == nil {
		log = discard
	}
	select {
	case err := <-errc:
		log.Error("stop", "reason", "listener failed", "error", err.Error())
		gctx, cancel := grace()
		defer cancel()
		s.Shutdown(gctx)
		return err
	case <-ctx.Done():
	}
	// Stop taking events (new connections and events on open ones), let
	// the verifications in progress finish within the grace, keep the rest
	// queued.
	running, queued, waiting := s.counts()
	log.Info("stop", "reason", "signal", "verifying", running, "queued", queued, "waitingForRetry", waiting, "grace", c.ShutdownGrace)
	gctx, cancel := grace()
	defer cancel()
	herrc := make(chan error, 1)
	go func() { herrc <- hs.Shutdown(gctx) }()
	if err := s.Shutdown(gctx); err != nil {
		return err
	}
	if gctx.Err() != nil {
		log.Warn("stopped", "drained", false, "abandoned", "verifications still running after the grace stay queued for the next start")
	} else {
		log.Info("stopped", "drained", true)
	}
	if herr := <-herrc; herr != nil && !errors.Is(herr, http.ErrServerClosed) && !errors.Is(herr, context.DeadlineExceeded) {
		return herr
	}
	return nil
}

// headerTimeout is read_header_timeout (5 s when not set), at most
// read_timeout.
func headerTimeout(header, read time.Duration) time.Duration {
	if header <= 0 {
		header = 5 * time.Second
	}
	if read > 0 {
		header = min(header, read)
	}
	return header
}

func (c *ServeConfig) registryHosts() []string {
	var hs []string
	for _, r := range c.Registries {
		hs = append(hs, r)
	}
	return hs
}

func lowerKeys(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// hostKeychain hands out inner's credentials for the configured registry
// hosts only; every other host gets anonymous access.
type hostKeychain struct {
	hosts map[string]bool
	inner authn.Keychain
}

func (k hostKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if !k.hosts[r.RegistryStr()] {
		return authn.Anonymous, nil
	}
	return k.inner.Resolve(r)
}

// staticKeychain answers every host with one authenticator (hostKeychain
// limits the hosts).
type staticKeychain struct{ auth authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }
