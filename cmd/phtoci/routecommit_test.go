package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
)

// commitWorld is a three-station train (st-a, st-b, st-c) as built, after
// st-a and after st-b, plus an outsider's key pair.
type commitWorld struct {
	*world
	built, after1, after2 string
}

func newCommitWorld(t *testing.T) *commitWorld {
	t.Helper()
	w := &commitWorld{world: newWorld(t, "st-a", "st-b", "st-c")}
	ok(t, "keys", "generate", w.path("evil"))
	w.built, w.after1, w.after2 = w.path("built.tar"), w.path("after1.tar"), w.path("after2.tar")
	w.build(t, w.built)
	w.postRun(t, "st-a", w.built, w.after1)
	w.postRun(t, "st-b", w.after1, w.after2)
	return w
}

func (w *commitWorld) pubHex(t *testing.T, name string) string {
	t.Helper()
	k, err := keys.LoadPublicKey(w.path(name) + ".pub.pem")
	testutil.Must(t, err)
	h, err := keys.EncodePublicKeyHex(k)
	testutil.Must(t, err)
	return h
}

// tamper writes the train at in with its config edited to a new file.
func (w *commitWorld) tamper(t *testing.T, in, name string, edit func(*protocol.Config)) string {
	t.Helper()
	out := w.path(name + ".tar")
	writeRef(t, withConfig(t, openRef(t, in, oci.Options{}), edit), out, oci.Options{})
	return out
}

// decryptJSON runs the researcher's decrypt --json and returns the JSON
// it printed.
func (w *commitWorld) decryptJSON(t *testing.T, in, out string) (result, map[string]any) {
	t.Helper()
	r := phtoci(t, "", nil, "decrypt", in, "--key", w.key("researcher"), "--out", out, "--json")
	var v map[string]any
	readJSON(t, r.stdout, &v)
	return r, v
}

// TestRouteCommitmentAttacks: on a built train (which carries the
// builder's route commitment) each edit of the route in transit — a
// station added, a pending station dropped, the pending stations
// reordered, a pending station re-keyed — is refused by the next
// station's pre-run and post-run, by keyless verify and by the
// researcher's decrypt, with check route_commitment and a message naming
// what differs; nothing is written. Without the commitment, each of them
// verifies.
func TestRouteCommitmentAttacks(t *testing.T) {
	w := newCommitWorld(t)
	evil := w.pubHex(t, "evil")
	cases := []struct {
		name    string
		in      string
		edit    func(*protocol.Config)
		station string // the next station, which runs pre-run and post-run
		mention []string
	}{
		{"station added", w.after1, func(c *protocol.Config) {
			c.Route = append(c.Route, protocol.RouteEntry{Station: "evil", EcoSystem: "tue", RSAPublicKey: evil, Index: 3})
		}, "st-b", []string{`station "evil" (route[3]) was added after the build`}},
		{"pending station dropped", w.after1, func(c *protocol.Config) {
			c.Route = slices.DeleteFunc(c.Route, func(r protocol.RouteEntry) bool { return r.Station == "st-c" })
		}, "st-b", []string{`station "st-c" (committed route[2]) was removed`}},
		{"pending stations reordered", w.after1, func(c *protocol.Config) {
			for i := range c.Route {
				switch c.Route[i].Station {
				case "st-b":
					c.Route[i].Index = 2
				case "st-c":
					c.Route[i].Index = 1
				}
			}
		}, "st-c", []string{"the route was reordered", `"st-a", "st-c", "st-b"`}},
		{"pending station re-keyed", w.after1, func(c *protocol.Config) {
			for i := range c.Route {
				if c.Route[i].Station == "st-c" {
					c.Route[i].RSAPublicKey = evil
				}
			}
		}, "st-b", []string{`station "st-c" (route[2]) has key ` + fp(t, w.path("evil")+".pub.pem")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := strings.ReplaceAll(c.name, " ", "-")
			in := w.tamper(t, c.in, name, c.edit)
			mention := append([]string{"route_commitment"}, c.mention...)
			out := w.path(name + "-out.tar")
			fails(t, exitVerification, nil, []string{"verify", in}, mention...)
			fails(t, exitVerification, nil, append([]string{"pre-run", in, "-o", out, "--ledger", "none"}, w.stationArgs(c.station)...), mention...)
			fails(t, exitVerification, nil, append([]string{"post-run", in, "--results", w.results(t, c.station), "-o", out, "--ledger", "none"}, w.stationArgs(c.station)...), mention...)
			if exists(out) {
				t.Errorf("a step wrote %s", out)
			}
			dec := w.path(name + "-decrypted")
			r, v := w.decryptJSON(t, in, dec)
			if r.code != exitVerification || v["check"] != "route_commitment" || v["complete"] != nil || exists(dec) {
				t.Errorf("decrypt --json: exit %d, %s", r.code, r.stdout)
			}

			// The same edit with the commitment removed as well passes
			// keyless verify: only a trust store (requireRouteCommitment,
			// or every station pinned) refuses it.
			bare := w.tamper(t, c.in, name+"-bare", func(cfg *protocol.Config) { c.edit(cfg); cfg.Context = nil })
			ok(t, "verify", bare, "--quiet")
		})
	}
}

// TestDroppedPendingStationIsNotComplete: after st-b, dropping the pending
// st-c made the researcher's decrypt say "complete": true; with the route
// commitment it refuses (route_commitment) and writes nothing.
func TestDroppedPendingStationIsNotComplete(t *testing.T) {
	w := newCommitWorld(t)
	dropped := w.tamper(t, w.after2, "dropped", func(c *protocol.Config) {
		c.Route = slices.DeleteFunc(c.Route, func(r protocol.RouteEntry) bool { return r.Station == "st-c" })
	})
	out := w.path("results")
	r, v := w.decryptJSON(t, dropped, out)
	if r.code != exitVerification || v["check"] != "route_commitment" || v["complete"] != nil || exists(out) {
		t.Fatalf("decrypt --json of a route with its pending station dropped: exit %d, %s", r.code, r.stdout)
	}
	if !strings.Contains(v["error"].(string), `station "st-c" (committed route[2]) was removed`) {
		t.Errorf("decrypt --json: the error does not name the dropped station: %s", v["error"])
	}
	// The train as st-b left it: incomplete, and says so.
	r, v = w.decryptJSON(t, w.after2, w.path("results-2"))
	if r.code != 0 || v["complete"] != false {
		t.Errorf("decrypt --json of the train as st-b left it: exit %d, %s", r.code, r.stdout)
	}
}

// TestRouteCommitmentTrustStore: requireRouteCommitment refuses a train
// without a commitment (the reference's vectors train, or a built train
// whose commitment was removed) in verify, pre-run and post-run; a store
// that pins the builder and only some stations accepts a committed route
// (where it used to demand every station pinned), but not the same route
// without its commitment.
func TestRouteCommitmentTrustStore(t *testing.T) {
	w := newCommitWorld(t)
	required := writeTrust(t, w.world, "required", trust.File{RequireRouteCommitment: true})
	vectorsTrain := filepath.Join(vectors, "images", "train_initial.docker.tar")
	pem, err := os.ReadFile(filepath.Join(vectors, "keys", "station_1.pem"))
	testutil.Must(t, err)
	testutil.Must(t, os.WriteFile(w.key("station_1"), pem, 0o600))
	station1 := append(w.stationArgs("station_1"), "--ledger", "none")
	out := w.path("out.tar")
	fails(t, exitVerification, nil, []string{"verify", vectorsTrain, "--trust", required}, "route_commitment", "requires one")
	fails(t, exitVerification, nil, append([]string{"pre-run", vectorsTrain, "--trust", required, "-o", out}, station1...), "route_commitment", "requires one")
	fails(t, exitVerification, nil, append([]string{"post-run", vectorsTrain, "--trust", required, "--results", w.results(t, "station_1"), "-o", out}, station1...), "route_commitment", "requires one")
	if exists(out) {
		t.Errorf("a step wrote %s", out)
	}
	stripped := w.tamper(t, w.after1, "stripped", func(c *protocol.Config) { c.Context = nil })
	fails(t, exitVerification, nil, []string{"verify", stripped, "--trust", required}, "route_commitment", "requires one")
	ok(t, "verify", w.after1, "--trust", required, "--quiet")
	ok(t, append([]string{"pre-run", w.after1, "--trust", required, "-o", w.path("dec.tar"), "--ledger", "none"}, w.stationArgs("st-b")...)...)

	var v struct {
		Checked    []string `json:"checked"`
		NotChecked []string `json:"not_checked"`
	}
	readJSON(t, ok(t, "verify", vectorsTrain, "--json").stdout, &v)
	if slices.Contains(v.Checked, "route_commitment") || !slices.ContainsFunc(v.NotChecked, func(s string) bool { return strings.HasPrefix(s, "route_commitment") }) {
		t.Errorf("verify --json of a train without a commitment: %+v", v)
	}
	v.Checked, v.NotChecked = nil, nil
	readJSON(t, ok(t, "verify", w.after1, "--json").stdout, &v)
	if !slices.Contains(v.Checked, "route_commitment") || slices.ContainsFunc(v.NotChecked, func(s string) bool { return strings.HasPrefix(s, "route_commitment") }) {
		t.Errorf("verify --json of a committed train: %+v", v)
	}

	partial := writeTrust(t, w.world, "partial", trust.File{Builders: []string{"builder.pub.pem"}, Stations: map[string]string{"st-a": "st-a.pub.pem"}})
	ok(t, "verify", w.after1, "--trust", partial, "--quiet")
	ok(t, append([]string{"pre-run", w.after1, "--trust", partial, "-o", w.path("dec-partial.tar"), "--ledger", "none"}, w.stationArgs("st-b")...)...)
	fails(t, exitVerification, nil, []string{"verify", stripped, "--trust", partial}, "route[1] (station st-b)", "not pinned")
	unpinnedBuilder := writeTrust(t, w.world, "unpinned-builder", trust.File{Stations: map[string]string{"st-a": "st-a.pub.pem"}})
	fails(t, exitVerification, nil, []string{"verify", w.after1, "--trust", unpinnedBuilder}, "route[1] (station st-b)", "not pinned")
}

// TestRouteCommitmentSurvivesPythonStations: a station that follows the
// Python implementation's config model (known fields only, @context an
// opaque dict, json.dumps(indent=2)) writes phtoci's configs back byte
// for byte, and the route commitment survives its rewrite of a config in
// another layout: the next stations and the researcher check it and go
// on, and an added station is still refused after the rewrite.
func TestRouteCommitmentSurvivesPythonStations(t *testing.T) {
	w := newCommitWorld(t)
	after1 := openRef(t, w.after1, oci.Options{})
	raw := rawConfigOf(t, after1)
	if got := pythonRewrite(t, raw); !bytes.Equal(got, raw) {
		t.Fatalf("the Python config model writes phtoci's config differently:\n%s", got)
	}
	// Another tool's layout (sorted keys, compact, @context members
	// reordered), then the Python station's write-back.
	var anyCfg any
	testutil.Must(t, json.Unmarshal(raw, &anyCfg))
	other, err := json.Marshal(anyCfg)
	testutil.Must(t, err)
	rewritten := pythonRewrite(t, other)
	if !strings.Contains(string(rewritten), `"`+protocol.RouteCommitmentKey+`": {`) {
		t.Fatalf("the commitment did not survive the Python rewrite:\n%s", rewritten)
	}
	viaPython := w.path("via-python.tar")
	writeRef(t, appendFiles(t, after1, map[string][]byte{train.ConfigPath: rewritten}), viaPython, oci.Options{})

	var v struct {
		Checked []string `json:"checked"`
	}
	readJSON(t, ok(t, "verify", viaPython, "--json").stdout, &v)
	if !slices.Contains(v.Checked, "route_commitment") {
		t.Errorf("verify --json after the Python rewrite: checked %v", v.Checked)
	}
	b, c := w.path("py-b.tar"), w.path("py-c.tar")
	w.postRun(t, "st-b", viaPython, b)
	bCfg := rawConfigOf(t, openRef(t, b, oci.Options{}))
	w.postRun(t, "st-c", b, c)
	r, d := w.decryptJSON(t, c, w.path("py-results"))
	if r.code != 0 || d["complete"] != true {
		t.Errorf("decrypt --json after a Python station: exit %d, %s", r.code, r.stdout)
	}

	// A station added on top of the Python station's output is refused.
	evil := w.pubHex(t, "evil")
	added := w.tamper(t, b, "py-added", func(c *protocol.Config) {
		c.Route = append(c.Route, protocol.RouteEntry{Station: "evil", EcoSystem: "tue", RSAPublicKey: evil, Index: 3})
	})
	fails(t, exitVerification, nil, append([]string{"pre-run", added, "-o", w.path("x.tar"), "--ledger", "none"}, w.stationArgs("st-c")...), "route_commitment", `"evil"`)
	if got := pythonRewrite(t, bCfg); !bytes.Equal(got, bCfg) {
		t.Error("the Python config model writes st-b's config differently")
	}
}

// pythonRewrite is train_config.json read and written back by a station
// following the Python implementation's config model: a pydantic model of
// the known fields (unknown ones dropped, missing ones null, @context an
// opaque dict: `context: dict = Field(default=None, alias="@context")`),
// the route sorted by index, written by json.dumps(indent=2) (dicts keep
// their order; ensure_ascii). Standard library only.
func pythonRewrite(t *testing.T, raw []byte) []byte {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	top, ok := pyLoad(t, d).(pyDict)
	if !ok {
		t.Fatal("config is not an object")
	}
	obj := func(v any) pyDict { o, _ := v.(pyDict); return o }
	pick := func(from pyDict, fields ...string) pyDict {
		out := pyDict{}
		for _, f := range fields {
			out = append(out, pyPair{f, from.get(f)})
		}
		return out
	}
	var route []any
	for _, e := range asList(top.get("route")) {
		e := pick(obj(e), "station", "eco_system", "rsa_public_key", "index", "signature", "encrypted_key")
		if s := obj(e.get("signature")); s != nil {
			e.set("signature", pick(s, "digest", "signature"))
		}
		route = append(route, e)
	}
	sort.SliceStable(route, func(i, j int) bool {
		a, _ := route[i].(pyDict).get("index").(json.Number).Int64()
		b, _ := route[j].(pyDict).get("index").(json.Number).Int64()
		return a < b
	})
	if route == nil {
		route = []any{}
	}
	model := pyDict{
		{"source", pick(obj(top.get("source")), "type", "address", "tag", "branch")},
		{"creator", pick(obj(top.get("creator")), "id", "rsa_public_key", "paillier_public_key", "encrypted_key")},
		{"proposal_id", top.get("proposal_id")}, {"@id", top.get("@id")},
		{"@context", top.get("@context")}, // opaque: as parsed
		{"session_id", top.get("session_id")}, {"route", route},
		{"file_list", top.get("file_list")}, {"hash", top.get("hash")}, {"signature", top.get("signature")},
		{"build", pick(obj(top.get("build")), "signature", "rsa_public_key")},
		{"result_hash", top.get("result_hash")}, {"result_signature", top.get("result_signature")},
	}
	var b bytes.Buffer
	pyDump(&b, model, 0)
	return b.Bytes()
}

// pyDict is a Python dict: its items in insertion order.
type pyDict []pyPair

type pyPair struct {
	k string
	v any
}

func (d pyDict) get(k string) any {
	for _, p := range d {
		if p.k == k {
			return p.v
		}
	}
	return nil
}

func (d pyDict) set(k string, v any) {
	for i := range d {
		if d[i].k == k {
			d[i].v = v
		}
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

// pyLoad is json.load: objects become pyDicts (a repeated key keeps its
// first position and its last value, as in a dict).
func pyLoad(t *testing.T, d *json.Decoder) any {
	t.Helper()
	tok, err := d.Token()
	testutil.Must(t, err)
	switch tok {
	case json.Delim('{'):
		o := pyDict{}
		for d.More() {
			k, err := d.Token()
			testutil.Must(t, err)
			v := pyLoad(t, d)
			if i := slices.IndexFunc(o, func(p pyPair) bool { return p.k == k.(string) }); i >= 0 {
				o[i].v = v
			} else {
				o = append(o, pyPair{k.(string), v})
			}
		}
		_, err := d.Token()
		testutil.Must(t, err)
		return o
	case json.Delim('['):
		l := []any{}
		for d.More() {
			l = append(l, pyLoad(t, d))
		}
		_, err := d.Token()
		testutil.Must(t, err)
		return l
	}
	return tok
}

// pyDump is json.dumps(v, indent=2) with ensure_ascii.
func pyDump(b *bytes.Buffer, v any, depth int) {
	nl := func(d int) { b.WriteString("\n" + strings.Repeat("  ", d)) }
	switch x := v.(type) {
	case pyDict:
		if len(x) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{")
		for i, p := range x {
			if i > 0 {
				b.WriteString(",")
			}
			nl(depth + 1)
			pyDump(b, p.k, depth+1)
			b.WriteString(": ")
			pyDump(b, p.v, depth+1)
		}
		nl(depth)
		b.WriteString("}")
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[")
		for i, e := range x {
			if i > 0 {
				b.WriteString(",")
			}
			nl(depth + 1)
			pyDump(b, e, depth+1)
		}
		nl(depth)
		b.WriteString("]")
	case string:
		b.WriteString(`"`)
		for _, u := range utf16.Encode([]rune(x)) {
			switch {
			case u == '"':
				b.WriteString(`\"`)
			case u == '\\':
				b.WriteString(`\\`)
			case u == '\n':
				b.WriteString(`\n`)
			case u == '\r':
				b.WriteString(`\r`)
			case u == '\t':
				b.WriteString(`\t`)
			case u == '\b':
				b.WriteString(`\b`)
			case u == '\f':
				b.WriteString(`\f`)
			case u < 0x20 || u > 0x7e:
				fmt.Fprintf(b, `\u%04x`, u)
			default:
				b.WriteByte(byte(u))
			}
		}
		b.WriteString(`"`)
	case json.Number:
		b.WriteString(x.String())
	case bool:
		fmt.Fprint(b, x)
	case nil:
		b.WriteString("null")
	default:
		panic(fmt.Sprintf("pyDump: %T", v))
	}
}
