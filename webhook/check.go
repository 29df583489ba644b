package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/phtoci/phtoci/oci"
)

// ErrCheck reports a serve config that would not run: its store or a
// registry cannot be reached, or refuses the credentials.
var ErrCheck = errors.New("serve config check failed")

// durationDefaults are the defaults of the duration keys, by key.
var durationDefaults = map[string]time.Duration{
	"verify_timeout": 5 * time.Minute, "read_timeout": 30 * time.Second, "write_timeout": 30 * time.Second,
	"idle_timeout": 120 * time.Second, "retry_window": time.Hour, "shutdown_grace": 30 * time.Second,
	"lease": 2 * time.Minute, "stall_timeout": oci.DefaultStallTimeout, "read_header_timeout": 5 * time.Second,
}

// durations are the duration keys of c, by key.
func (c *ServeConfig) durations() map[string]*time.Duration {
	return map[string]*time.Duration{
		"verify_timeout": &c.VerifyTimeout, "read_timeout": &c.ReadTimeout, "write_timeout": &c.WriteTimeout,
		"idle_timeout": &c.IdleTimeout, "retry_window": &c.RetryWindow, "shutdown_grace": &c.ShutdownGrace,
		"lease": &c.Lease, "stall_timeout": &c.StallTimeout, "read_header_timeout": &c.ReadHeaderTimeout,
	}
}

// StoreKind names the store without its password: "bbolt PATH" or
// "postgres USER@HOST/DB".
func (c *ServeConfig) StoreKind() string {
	if strings.HasPrefix(c.Store, "postgres://") || strings.HasPrefix(c.Store, "postgresql://") {
		u, err := url.Parse(c.Store)
		if err != nil {
			return "postgres"
		}
		who := ""
		if u.User != nil {
			who = u.User.Username() + "@"
		}
		return "postgres " + who + u.Host + u.Path
	}
	return "bbolt " + c.Store
}

// registryMap is the event host → registry map serve uses: "*" for the
// one registry every event is verified against.
func (c *ServeConfig) registryMap() map[string]string {
	if c.Registry != "" {
		return map[string]string{"*": c.Registry}
	}
	return c.Registries
}

// Summary is what a config runs, as slog key-value pairs: the listener,
// the store (without its password), the registries, whether a trust store
// and a read secret are set, the workers and queue, and every limit
// changed from its default. The start-up log line and --check-config
// print it.
func (c *ServeConfig) Summary() []any {
	regs := c.registryMap()
	var rs []string
	for h, r := range regs {
		if h == "*" {
			rs = append(rs, r)
		} else {
			rs = append(rs, h+"→"+r)
		}
	}
	sort.Strings(rs)
	trustOn := "off"
	if c.Trust != "" {
		trustOn = "on " + c.Trust
	}
	read := "public"
	if c.ReadSecret != "" {
		read = "read secret"
	}
	creds := "docker config"
	if c.Username != "" {
		creds = "user " + c.Username
	}
	workers, queue := c.Workers, c.Queue
	if workers <= 0 {
		workers = 2 // Config's defaults
	}
	if queue <= 0 {
		queue = 1024
	}
	attrs := []any{"listen", c.Listen, "tls", c.TLS.Cert != "", "store", c.StoreKind(), "registries", strings.Join(rs, ","),
		"credentials", creds, "trust", trustOn, "read", read, "workers", workers, "queue", queue, "route", c.Route != nil}
	var keys []string
	for k := range durationDefaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ds := c.durations()
	for _, k := range keys {
		if v := *ds[k]; v != 0 && v != durationDefaults[k] {
			attrs = append(attrs, k, v.String())
		}
	}
	if c.MaxHeaderBytes != 0 && c.MaxHeaderBytes != 64<<10 {
		attrs = append(attrs, "max_header_bytes", c.MaxHeaderBytes)
	}
	if c.MaxConnections != 0 && c.MaxConnections != 256 {
		attrs = append(attrs, "max_connections", c.MaxConnections)
	}
	if c.MaxBody != 0 {
		attrs = append(attrs, "max_body", c.MaxBody)
	}
	if c.Retries != 0 {
		attrs = append(attrs, "retries", c.Retries)
	}
	var lims []string
	for k, v := range c.Limits {
		lims = append(lims, k+"="+v)
	}
	sort.Strings(lims)
	if len(lims) > 0 {
		attrs = append(attrs, "limits", strings.Join(lims, ","))
	}
	return attrs
}

// keychain is the credentials serve pulls with: the configured user (or
// the Docker config) for the configured registries, anonymous elsewhere.
func (c *ServeConfig) keychain() (hostKeychain, error) {
	kc := hostKeychain{hosts: map[string]bool{}, inner: authn.DefaultKeychain}
	for _, h := range append(c.registryHosts(), c.Registry) {
		if h != "" {
			kc.hosts[h] = true
		}
	}
	if c.Username != "" {
		p, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return kc, fmt.Errorf("serve config password_file: %w", err)
		}
		kc.inner = staticKeychain{oci.BasicAuth(c.Username, strings.TrimRight(string(p), "\r\n"))}
	}
	return kc, nil
}

// CheckConfig does what a start would short of listening: it opens the
// store (creating or migrating it as a start does) and asks each registry
// for its API root (GET /v2/) with serve's credentials, then writes what
// would run to w, a line per key. Any failure is an ErrCheck naming the
// store or registry and the cause; credentials never appear.
func CheckConfig(ctx context.Context, c *ServeConfig, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := OpenVerdictStore(ctx, c.Store)
	if err != nil {
		return fmt.Errorf("%w: store %s: %w", ErrCheck, c.StoreKind(), err)
	}
	st.Close()
	kc, err := c.keychain()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheck, err)
	}
	var hosts []string
	for _, r := range c.registryMap() {
		hosts = append(hosts, r)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		if err := pingRegistry(ctx, h, kc, c.Insecure); err != nil {
			return fmt.Errorf("%w: registry %s: %w", ErrCheck, h, err)
		}
	}
	attrs := c.Summary()
	for i := 0; i+1 < len(attrs); i += 2 {
		fmt.Fprintf(w, "%s: %s\n", attrs[i], printable(fmt.Sprint(attrs[i+1])))
	}
	_, err = fmt.Fprintf(w, "check: store and %d registries reachable, credentials accepted\n", len(hosts))
	return err
}

// pingRegistry asks a registry for GET /v2/ with the keychain's
// credentials: a token registry hands out a token for them, a basic-auth
// one answers 200 only with the right password.
func pingRegistry(ctx context.Context, host string, kc authn.Keychain, insecure bool) error {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return err
	}
	auth, err := kc.Resolve(reg)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	tr, err := transport.NewWithContext(ctx, reg, auth, http.DefaultTransport, nil)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("GET /v2/: %s: the credentials are refused", resp.Status)
	default:
		return fmt.Errorf("GET /v2/: %s", resp.Status)
	}
}

// printable quotes s when it holds a control or other non-printable
// character, so a config value cannot forge lines.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
