package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/trust"
)

func writeTrust(t *testing.T, w *world, name string, f trust.File) string {
	t.Helper()
	b, err := json.Marshal(f)
	testutil.Must(t, err)
	p := w.path(name + ".json")
	testutil.Must(t, os.WriteFile(p, b, 0o644))
	return p
}

func fp(t *testing.T, pub string) string {
	t.Helper()
	k, err := keys.LoadPublicKey(pub)
	testutil.Must(t, err)
	return keys.Fingerprint(k)
}

// TestTrustStore: pinned keys and master images, through the binary.
func TestTrustStore(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st-a")
	ok(t, "keys", "generate", w.path("impostor"))
	masterRef := reg.Host + "/pht/master:latest"
	writeRef(t, openRef(t, sampleMaster, oci.Options{}), masterRef, oci.Options{})
	build := func(out, userKey string) {
		ok(t, "build", masterRef, "--files", "../../testdata/sample/train", "--query", "../../testdata/sample/query.json",
			"--creator-id", "researcher-1", "--user-key", userKey, "--builder-key", w.key("builder"),
			"--route", "st-a="+w.path("st-a")+".pub.pem", "-o", out, "--quiet")
	}
	good, forged := w.path("good.tar"), w.path("forged.tar")
	build(good, w.key("researcher"))
	build(forged, w.key("impostor")) // another valid key and signature, same creator id
	pinned := trust.File{
		Creators: map[string]string{"researcher-1": "researcher.pub.pem"}, RequireKnownCreator: true,
		Builders: []string{"builder.pub.pem"}, Stations: map[string]string{"st-a": "st-a.pub.pem"},
		Masters: []trust.Master{{Repository: reg.Host + "/pht/*"}},
	}
	store := writeTrust(t, w, "trust", pinned)
	ok(t, append([]string{"pre-run", good, "--trust", store, "-o", w.path("dec.tar")}, w.stationArgs("st-a")...)...)
	ok(t, "verify", good, "--trust", store, "--quiet")

	fails(t, exitVerification, nil, []string{"verify", forged, "--trust", store}, "creator researcher-1", fp(t, w.path("impostor")+".pub.pem"), fp(t, w.path("researcher")+".pub.pem"))
	fails(t, exitVerification, []string{"PHTOCI_TRUST=" + store}, append([]string{"pre-run", forged, "-o", w.path("x.tar")}, w.stationArgs("st-a")...), "creator researcher-1")
	if exists(w.path("x.tar")) {
		t.Error("an untrusted train was written")
	}

	cases := []struct {
		name    string
		edit    func(*trust.File)
		mention string
	}{
		{"unknown creator", func(f *trust.File) { f.Creators = map[string]string{"someone-else": "researcher.pub.pem"} }, "unknown creator"},
		{"builder not pinned", func(f *trust.File) { f.Builders = []string{"impostor.pub.pem"} }, "builder"},
		{"station key differs", func(f *trust.File) { f.Stations = map[string]string{"st-a": "impostor.pub.pem"} }, "station st-a"},
		{"master repository not allowed", func(f *trust.File) { f.Masters = []trust.Master{{Repository: "harbor.example/approved/*"}} }, "source.address"},
		{"master digest not pinned", func(f *trust.File) {
			f.Masters = []trust.Master{{Repository: reg.Host + "/pht/master", Digests: []string{"sha256:" + strings.Repeat("0", 64)}}}
			f.CheckBase = true
		}, "digest not pinned"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := pinned
			c.edit(&f)
			p := writeTrust(t, w, strings.ReplaceAll(c.name, " ", "-"), f)
			fails(t, exitVerification, nil, []string{"verify", good, "--trust", p}, c.mention)
		})
	}
	// The right digest pinned, and checkBase on: pre-run checks the master too.
	d := strings.TrimSpace(skopeo(t, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+masterRef))
	f := pinned
	f.Masters = []trust.Master{{Repository: reg.Host + "/pht/master", Digests: []string{d}}}
	f.CheckBase = true
	ok(t, append([]string{"pre-run", good, "--trust", writeTrust(t, w, "digest-ok", f), "-o", w.path("dec2.tar")}, w.stationArgs("st-a")...)...)
	// A broken store is a usage error naming the field.
	bad := writeTrust(t, w, "bad", trust.File{Builders: []string{"missing.pub.pem"}})
	fails(t, exitUsage, nil, []string{"verify", good, "--trust", bad}, "builders[0]")
}
