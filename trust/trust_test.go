package trust_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/trust"
)

const vectorKeys = "../testdata/vectors/keys"

func keyFile(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(vectorKeys, name+".pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// writeStore writes f as a trust store file in a new directory and
// returns its path.
func writeStore(t *testing.T, f any) string {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "trust.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoad: what a store file may hold, and the error for each way it can
// be wrong, naming the field.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	pem, err := os.ReadFile(keyFile(t, "station_1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "st1.pub.pem"), pem, 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := keys.LoadPublicKey(keyFile(t, "user"))
	if err != nil {
		t.Fatal(err)
	}
	hexKey, err := keys.EncodePublicKeyHex(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		file     string // store file content; "" = no file
		wantErr  error
		mentions string
	}{
		{name: "missing file", wantErr: fs.ErrNotExist, mentions: "trust store"},
		{name: "empty store", file: `{}`},
		{name: "all fields", file: `{"creators": {"test-user-id": "` + keyFile(t, "user") + `"}, "requireKnownCreator": true,
			"builders": ["` + keyFile(t, "builder") + `"], "stations": {"station_1": "st1.pub.pem"}, "allowUnknownStations": true,
			"masters": [{"repository": "test_*", "digests": ["sha256:00"]}], "checkBase": true}`},
		{name: "hex key", file: `{"creators": {"test-user-id": "` + hexKey + `"}}`},
		{name: "bad JSON", file: `{"creators": `, mentions: "trust.json"},
		{name: "unknown field", file: `{"creator": {}}`, mentions: `unknown field "creator"`},
		{name: "missing key file", file: `{"builders": ["nope.pem"]}`, wantErr: fs.ErrNotExist, mentions: "builders[0]"},
		{name: "not a key", file: `{"stations": {"station_1": "trust.json"}}`, mentions: "stations.station_1"},
		{name: "bad master pattern", file: `{"masters": [{"repository": "reg/[x"}]}`, wantErr: path.ErrBadPattern, mentions: "masters[0].repository"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "trust.json")
			if c.file != "" {
				if err := os.WriteFile(filepath.Join(dir, "trust.json"), []byte(c.file), 0o644); err != nil {
					t.Fatal(err)
				}
				p = filepath.Join(dir, "trust.json")
			}
			s, err := trust.Load(p)
			wantOK := c.wantErr == nil && c.mentions == ""
			switch {
			case wantOK && err != nil:
				t.Fatalf("Load: %v", err)
			case wantOK && s == nil:
				t.Fatal("Load: nil store")
			case !wantOK && err == nil:
				t.Fatal("Load accepted it")
			case c.wantErr != nil && !errors.Is(err, c.wantErr):
				t.Errorf("Load: %v, want %v", err, c.wantErr)
			case !wantOK && !strings.Contains(err.Error(), c.mentions):
				t.Errorf("Load: %q does not mention %q", err, c.mentions)
			}
		})
	}
}

func vectorConfig(t *testing.T) *protocol.Config {
	t.Helper()
	b, err := os.ReadFile("../testdata/vectors/config/initial_train_config.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := protocol.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestCheckConfig: the reference train (creator test-user-id, builder,
// route station_1, station_2, source test_repository) against stores that
// pin each party rightly and wrongly.
func TestCheckConfig(t *testing.T) {
	user, builder, st1, st2 := keyFile(t, "user"), keyFile(t, "builder"), keyFile(t, "station_1"), keyFile(t, "station_2")
	for _, c := range []struct {
		name     string
		store    trust.File
		edit     func(*protocol.Config)
		wantErr  error
		mentions string
	}{
		{name: "empty store trusts everything", store: trust.File{}},
		{name: "pinned creator", store: trust.File{Creators: map[string]string{"test-user-id": user}, RequireKnownCreator: true}},
		{name: "creator with another key", store: trust.File{Creators: map[string]string{"test-user-id": st1}},
			wantErr: trust.ErrUntrusted, mentions: "creator test-user-id"},
		{name: "unknown creator when known ones are required", store: trust.File{Creators: map[string]string{"someone": user}, RequireKnownCreator: true},
			wantErr: trust.ErrUntrusted, mentions: "unknown creator"},
		{name: "unknown creator allowed", store: trust.File{Creators: map[string]string{"someone": st1}}},
		{name: "pinned builder", store: trust.File{Builders: []string{st1, builder}}},
		{name: "builder not pinned", store: trust.File{Builders: []string{st1}},
			wantErr: trust.ErrUntrusted, mentions: "builder"},
		{name: "pinned stations", store: trust.File{Stations: map[string]string{"station_1": st1, "station_2": st2}}},
		{name: "station with another key", store: trust.File{Stations: map[string]string{"station_1": st2, "station_2": st2}},
			wantErr: trust.ErrUntrusted, mentions: "station station_1"},
		{name: "unpinned station on the route", store: trust.File{Stations: map[string]string{"station_1": st1}},
			wantErr: trust.ErrUntrusted, mentions: "route[1] (station station_2)"},
		{name: "unpinned station allowed", store: trust.File{Stations: map[string]string{"station_1": st1}, AllowUnknownStations: true}},
		{name: "allowed master", store: trust.File{Masters: []trust.Master{{Repository: "test_*"}}}},
		{name: "master not allowed", store: trust.File{Masters: []trust.Master{{Repository: "harbor.example/*"}}},
			wantErr: trust.ErrUntrusted, mentions: `source.address "test_repository"`},
		{name: "config key not a key", store: trust.File{},
			edit: func(c *protocol.Config) { c.Creator.RSAPublicKey = "zz" }, wantErr: protocol.ErrInvalidConfig, mentions: "creator.rsa_public_key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := trust.Load(writeStore(t, c.store))
			if err != nil {
				t.Fatal(err)
			}
			cfg := vectorConfig(t)
			if c.edit != nil {
				c.edit(cfg)
			}
			err = s.CheckConfig(cfg)
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckConfig: %v", err)
				}
				return
			}
			if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.mentions) {
				t.Errorf("CheckConfig: %v, want %v mentioning %q", err, c.wantErr, c.mentions)
			}
			if c.wantErr == trust.ErrUntrusted && !errors.Is(err, protocol.ErrVerification) {
				t.Errorf("CheckConfig: %v does not match protocol.ErrVerification", err)
			}
		})
	}
}

// TestCheckMaster: repository patterns and pinned digests.
func TestCheckMaster(t *testing.T) {
	masters := []trust.Master{{Repository: "harbor.example/masters/*", Digests: []string{"sha256:aa", "sha256:bb"}}, {Repository: "docker.io/library/python"}}
	for _, c := range []struct {
		name, repo, digest string
		masters            []trust.Master
		wantErr            bool
	}{
		{"no masters: anything", "evil.example/x", "sha256:00", nil, false},
		{"pinned digest", "harbor.example/masters/r", "sha256:bb", masters, false},
		{"other digest", "harbor.example/masters/r", "sha256:cc", masters, true},
		{"repository without digests", "docker.io/library/python", "sha256:cc", masters, false},
		{"repository not allowed", "harbor.example/other/r", "sha256:aa", masters, true},
		{"pattern does not cross slashes", "harbor.example/masters/a/b", "sha256:aa", masters, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := trust.New(trust.File{Masters: c.masters}, "")
			if err != nil {
				t.Fatal(err)
			}
			err = s.CheckMaster(c.repo, c.digest)
			if c.wantErr != (err != nil) || (err != nil && (!errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), c.repo))) {
				t.Errorf("CheckMaster(%s, %s) = %v, want error %v (ErrUntrusted naming the repository)", c.repo, c.digest, err, c.wantErr)
			}
		})
	}
}

// committedVectorConfig is the reference train with the route commitment
// of testdata/route_commitment/vector.json (by the vector builder key).
func committedVectorConfig(t *testing.T) *protocol.Config {
	t.Helper()
	b, err := os.ReadFile("../testdata/route_commitment/vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Context json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	cfg := vectorConfig(t)
	cfg.Context = v.Context
	if ok, err := protocol.CheckRouteCommitment(cfg); !ok || err != nil {
		t.Fatalf("the vector's commitment: %v, %v", ok, err)
	}
	return cfg
}

// TestCheckConfigRouteCommitment: requireRouteCommitment refuses a train
// without a commitment; a commitment by a pinned builder stands in for
// pinning every station (the pinned ones are still checked), and a broken
// one is refused before anything is relaxed.
func TestCheckConfigRouteCommitment(t *testing.T) {
	builder, st1, st2 := keyFile(t, "builder"), keyFile(t, "station_1"), keyFile(t, "station_2")
	outsider, err := keys.LoadPublicKey(keyFile(t, "user"))
	if err != nil {
		t.Fatal(err)
	}
	outsiderHex, err := keys.EncodePublicKeyHex(outsider)
	if err != nil {
		t.Fatal(err)
	}
	partial := trust.File{Builders: []string{builder}, Stations: map[string]string{"station_1": st1}}
	for _, c := range []struct {
		name      string
		store     trust.File
		committed bool
		edit      func(*protocol.Config)
		wantErr   []error
		mentions  string
	}{
		{name: "required and absent", store: trust.File{RequireRouteCommitment: true},
			wantErr: []error{trust.ErrUntrusted, protocol.ErrRouteCommitment}, mentions: "route_commitment"},
		{name: "required and present", store: trust.File{RequireRouteCommitment: true}, committed: true},
		{name: "pinned builder's commitment: unpinned stations accepted", store: partial, committed: true},
		{name: "no commitment: every station must be pinned", store: partial,
			wantErr: []error{trust.ErrUntrusted}, mentions: "route[1] (station station_2)"},
		{name: "commitment by an unpinned builder relaxes nothing", store: trust.File{Stations: partial.Stations}, committed: true,
			wantErr: []error{trust.ErrUntrusted}, mentions: "route[1] (station station_2)"},
		{name: "pinned station still checked", store: trust.File{Builders: []string{builder}, Stations: map[string]string{"station_1": st2}}, committed: true,
			wantErr: []error{trust.ErrUntrusted}, mentions: "station station_1"},
		{name: "station added to a committed route", store: partial, committed: true,
			edit: func(c *protocol.Config) {
				c.Route = append(c.Route, protocol.RouteEntry{Station: "outsider", EcoSystem: "tue", RSAPublicKey: outsiderHex, Index: 2})
			},
			wantErr: []error{protocol.ErrRouteCommitment, protocol.ErrVerification}, mentions: `"outsider"`},
		{name: "station re-keyed in a committed route", store: trust.File{}, committed: true,
			edit:    func(c *protocol.Config) { c.Route[1].RSAPublicKey = outsiderHex },
			wantErr: []error{protocol.ErrRouteCommitment}, mentions: `"station_2"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := trust.Load(writeStore(t, c.store))
			if err != nil {
				t.Fatal(err)
			}
			cfg := vectorConfig(t)
			if c.committed {
				cfg = committedVectorConfig(t)
			}
			if c.edit != nil {
				c.edit(cfg)
			}
			err = s.CheckConfig(cfg)
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckConfig: %v", err)
				}
				return
			}
			for _, w := range c.wantErr {
				if !errors.Is(err, w) {
					t.Errorf("CheckConfig: %v, want %v", err, w)
				}
			}
			if err != nil && !strings.Contains(err.Error(), c.mentions) {
				t.Errorf("CheckConfig: %q does not mention %q", err, c.mentions)
			}
		})
	}
}
