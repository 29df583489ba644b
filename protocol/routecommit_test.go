package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/keys"
)

const rcdir = "../testdata/route_commitment"

type routeCommitmentVector struct {
	ConfigFile     string          `json:"config_file"`
	BuilderPEMFile string          `json:"builder_private_pem_file"`
	MessageHex     string          `json:"message_hex"`
	SignatureHex   string          `json:"signature_hex"`
	Context        json.RawMessage `json:"context"`
}

// committedVectorConfig is the reference's initial config with the
// vector's route commitment added by commitRoute.
func committedVectorConfig(t *testing.T) (*Config, routeCommitmentVector) {
	t.Helper()
	var v routeCommitmentVector
	b, err := os.ReadFile(filepath.Join(rcdir, "vector.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(rcdir, v.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	builder, err := keys.LoadPrivateKey(filepath.Join(rcdir, v.BuilderPEMFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := commitRoute(cfg, builder); err != nil {
		t.Fatal(err)
	}
	return cfg, v
}

// TestRouteCommitmentVector reproduces testdata/route_commitment/vector.json
// (made from the README's description by gen.py, with Python's
// cryptography package): the exact bytes signed, the signature (PKCS#1
// v1.5 is deterministic) and the @context written, whose other members
// stay first; the commitment verifies, also after Encode and ParseConfig.
func TestRouteCommitmentVector(t *testing.T) {
	cfg, v := committedVectorConfig(t)
	msg, err := routeCommitmentMessage(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(msg); got != v.MessageHex {
		t.Fatalf("signed bytes differ from the vector:\n got %s\nwant %s", got, v.MessageHex)
	}
	var want, got any
	if err := json.Unmarshal(v.Context, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cfg.Context, &got); err != nil {
		t.Fatal(err)
	}
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !bytes.Equal(wb, gb) {
		t.Fatalf("@context differs from the vector:\n got %s\nwant %s", gb, wb)
	}
	if !strings.Contains(string(cfg.Context), `"signature":"`+v.SignatureHex+`"`) {
		t.Error("the signature differs from the vector's")
	}
	if i, j := bytes.Index(cfg.Context, []byte(`"link"`)), bytes.Index(cfg.Context, []byte(RouteCommitmentKey)); i < 0 || i > j {
		t.Errorf("@context's own member is no longer first: %s", cfg.Context)
	}
	enc, err := cfg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(enc)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Config{cfg, back} {
		if ok, err := CheckRouteCommitment(c); !ok || err != nil {
			t.Fatalf("CheckRouteCommitment = %v, %v; want true, nil", ok, err)
		}
		st, err := Verify(c)
		if err != nil || !st.RouteCommitment {
			t.Fatalf("Verify = %+v, %v; want a status with the route commitment", st, err)
		}
	}
}

// TestRouteCommitmentRefuses: every change of the committed route, of the
// hash it binds or of the commitment itself is ErrRouteCommitment from
// Verify, naming what differs; a config without a commitment verifies as
// it did.
func TestRouteCommitmentRefuses(t *testing.T) {
	base, _ := committedVectorConfig(t)
	other := genKey(t, "outsider")
	otherHex, err := keys.EncodePublicKeyHex(&other.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	setCommitment := func(c *Config, edit func(rc map[string]any)) {
		var ctx map[string]any
		if err := json.Unmarshal(c.Context, &ctx); err != nil {
			t.Fatal(err)
		}
		edit(ctx[RouteCommitmentKey].(map[string]any))
		c.Context, _ = json.Marshal(ctx)
	}
	cases := []struct {
		name    string
		edit    func(c *Config)
		wantErr error // nil: verifies
		mention []string
	}{
		{"unchanged", func(c *Config) {}, nil, nil},
		{"station added", func(c *Config) {
			c.Route = append(c.Route, RouteEntry{Station: "outsider", EcoSystem: "tue", RSAPublicKey: otherHex, Index: 2})
		}, ErrRouteCommitment, []string{`"outsider"`, "route[2]", "added"}},
		{"pending station removed", func(c *Config) { c.Route = c.Route[:1] }, ErrRouteCommitment, []string{`"station_2"`, "removed"}},
		{"reordered (indices swapped)", func(c *Config) { c.Route[0].Index, c.Route[1].Index = 1, 0 }, ErrRouteCommitment,
			[]string{"reordered", `"station_2", "station_1"`}},
		{"re-keyed", func(c *Config) { c.Route[1].RSAPublicKey = otherHex }, ErrRouteCommitment,
			[]string{`"station_2"`, keys.Fingerprint(&other.PublicKey)}},
		{"re-indexed", func(c *Config) { c.Route[1].Index = 7 }, ErrRouteCommitment, []string{`"station_2"`, "index 7"}},
		{"commitment's listing edited along with the route", func(c *Config) {
			c.Route[1].RSAPublicKey = otherHex
			setCommitment(c, func(rc map[string]any) {
				rc["route"].([]any)[1].(map[string]any)["key"] = keys.Fingerprint(&other.PublicKey)
			})
		}, ErrRouteCommitment, []string{"does not verify with build.rsa_public_key"}},
		{"signature by another key", func(c *Config) {
			setCommitment(c, func(rc map[string]any) { rc["signature"] = strings.Repeat("00", 256) })
		}, ErrRouteCommitment, []string{"does not verify"}},
		{"unknown version", func(c *Config) { setCommitment(c, func(rc map[string]any) { rc["version"] = 2 }) }, ErrRouteCommitment, []string{"version 2"}},
		{"signature not hex", func(c *Config) { setCommitment(c, func(rc map[string]any) { rc["signature"] = "zz" }) }, ErrRouteCommitment, []string{"not hex"}},
		{"not an object", func(c *Config) {
			c.Context = json.RawMessage(`{"` + RouteCommitmentKey + `": "trust me"}`)
		}, ErrRouteCommitment, []string{"not a route commitment"}},
		{"no commitment", func(c *Config) { c.Context = json.RawMessage(`{"link": "https://www.w3.org/2018/credentials/v1"}`) }, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base.Clone()
			c.edit(cfg)
			_, err := Verify(cfg)
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, c.wantErr) || !errors.Is(err, ErrVerification) {
				t.Fatalf("Verify = %v, want %v (a verification failure)", err, c.wantErr)
			}
			for _, m := range append(c.mention, "route_commitment", RouteCommitmentKey) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%q does not mention %q", err, m)
				}
			}
		})
	}
}

// TestBuildCommitsRoute: Build signs the route; the commitment survives a
// station's post-run (the route array sorted, keys rewrapped) and every
// station verifies it.
func TestBuildCommitsRoute(t *testing.T) {
	cfg, _ := buildTrain(t, "st-1", "st-2", "st-3")
	if ok, err := CheckRouteCommitment(cfg); !ok || err != nil {
		t.Fatalf("a built train: CheckRouteCommitment = %v, %v; want true, nil", ok, err)
	}
	cfg.Route[0], cfg.Route[2] = cfg.Route[2], cfg.Route[0] // array order is not route order
	if st, err := Verify(cfg); err != nil || !st.RouteCommitment {
		t.Fatalf("Verify = %+v, %v", st, err)
	}
}

// TestContextWrittenBackAsPythonDoes: Encode writes @context (any JSON
// the config carries there) back as the reference's json.dumps(indent=2)
// does: member order, empty containers, every escape (DEL and non-ASCII
// as \u escapes, characters beyond the BMP as pairs), lone surrogates
// kept, integers of any size. The wants are Python 3's own output. Number
// literals and repeated members stay as received.
func TestContextWrittenBackAsPythonDoes(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"b":1,"a":{"z":[],"y":{}},"c":[1,"x",null,true,false]}`,
			"{\n  \"b\": 1,\n  \"a\": {\n    \"z\": [],\n    \"y\": {}\n  },\n  \"c\": [\n    1,\n    \"x\",\n    null,\n    true,\n    false\n  ]\n}"},
		{`{"s":"é ü 😀 \u00e9 \/ \" \\ \n \u0001 \u007f ` + "\x7f" + ` \t\b\f\r"}`,
			"{\n  \"s\": \"\\u00e9 \\u00fc \\ud83d\\ude00 \\u00e9 / \\\" \\\\ \\n \\u0001 \\u007f \\u007f \\t\\b\\f\\r\"\n}"},
		{`{"lone":"\ud800x\udc00","pair":"\ud83d\ude00","lone key \udfff":1}`,
			"{\n  \"lone\": \"\\ud800x\\udc00\",\n  \"pair\": \"\\ud83d\\ude00\",\n  \"lone key \\udfff\": 1\n}"},
		{`{"n":[0,-1,123456789012345678901234567890]}`, "{\n  \"n\": [\n    0,\n    -1,\n    123456789012345678901234567890\n  ]\n}"},
		{`[{"k":"v"},[],{}]`, "[\n  {\n    \"k\": \"v\"\n  },\n  [],\n  {}\n]"},
		// As received (Python would write 1.5 and one "d"): phtoci changes nothing it need not.
		{`{"f":1.50,"d":1,"d":2}`, "{\n  \"f\": 1.50,\n  \"d\": 1,\n  \"d\": 2\n}"},
	} {
		var e enc
		if err := e.raw(json.RawMessage(c.in)); err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if got := e.b.String(); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.in, got, c.want)
		}
		var again enc // what the next station writes
		if err := again.raw(e.b.Bytes()); err != nil || again.b.String() != e.b.String() {
			t.Errorf("%s: written back again: %q, %v", c.in, again.b.String(), err)
		}
	}
}
