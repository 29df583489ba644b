package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// tamperWorld is a built train and the same train after station st-a.
type tamperWorld struct {
	*world
	built, after1 string
}

func newTamperWorld(t *testing.T) *tamperWorld {
	w := &tamperWorld{world: newWorld(t, "st-a", "st-b")}
	w.built = w.path("built.tar")
	w.build(t, w.built)
	w.after1 = w.path("after1.tar")
	ok(t, append([]string{"post-run", w.built, "--results", w.results(t, "st-a"), "-o", w.after1}, w.stationArgs("st-a")...)...)
	return w
}

// symKey unwraps the train's current symmetric key with a station's key.
func (w *tamperWorld) symKey(t *testing.T, img v1.Image, st string, idx int) []byte {
	t.Helper()
	k, err := keys.LoadPrivateKey(w.key(st), nil)
	testutil.Must(t, err)
	cfg := configOf(t, img)
	ek, err := hex.DecodeString(*cfg.Route[idx].EncryptedKey)
	testutil.Must(t, err)
	sym, err := unwrapKey(k, ek)
	testutil.Must(t, err)
	return sym
}

func encrypt(t *testing.T, key, plain []byte) []byte {
	t.Helper()
	c, err := encryptCBC(key, plain)
	testutil.Must(t, err)
	return c
}

func withConfig(t *testing.T, img v1.Image, edit func(*protocol.Config)) v1.Image {
	t.Helper()
	cfg := configOf(t, img).Clone()
	edit(cfg)
	raw, err := cfg.Encode()
	testutil.Must(t, err)
	return appendFiles(t, img, map[string][]byte{train.ConfigPath: raw})
}

// TestTamperedTrains: each kind of tampering makes pre-run (and post-run)
// exit 1 with a message naming what is wrong, and write nothing.
func TestTamperedTrains(t *testing.T) {
	w := newTamperWorld(t)
	built := openRef(t, w.built, oci.Options{})
	after1 := openRef(t, w.after1, oci.Options{})
	flip := func(s string) string {
		b := []byte(s)
		if b[10] == 'a' {
			b[10] = 'b'
		} else {
			b[10] = 'a'
		}
		return string(b)
	}
	cases := []struct {
		name    string
		img     v1.Image
		station string
		mention []string
	}{
		{"unsigned train file", appendFiles(t, built, map[string][]byte{"opt/pht_train/extra.py": encrypt(t, w.symKey(t, built, "st-a", 0), []byte("print('not signed')"))}), "st-a", []string{"extra.py"}},
		{"immutable file changed", appendFiles(t, built, map[string][]byte{"opt/pht_train/entrypoint.py": encrypt(t, w.symKey(t, built, "st-a", 0), []byte("import os; os.system('exfiltrate')"))}), "st-a", []string{"/opt/pht_train: decryption or integrity check failed"}},
		{"undecryptable train file", appendFiles(t, built, map[string][]byte{"opt/pht_train/entrypoint.py": make([]byte, 40)}), "st-a", []string{"/opt/pht_train: decryption or integrity check failed"}},
		{"user signature", withConfig(t, built, func(c *protocol.Config) { c.Signature = flip(c.Signature) }), "st-a", []string{"signature"}},
		{"builder signature", withConfig(t, built, func(c *protocol.Config) { c.Build.Signature = flip(c.Build.Signature) }), "st-a", []string{"signature"}},
		{"previous results changed", appendFiles(t, after1, map[string][]byte{"opt/pht_results/count.txt": encrypt(t, w.symKey(t, after1, "st-b", 1), []byte("count at st-a = 4200\n"))}), "st-b", []string{"result"}},
		{"result signature", withConfig(t, after1, func(c *protocol.Config) { s := flip(*c.ResultSignature); c.ResultSignature = &s }), "st-b", []string{"signature"}},
		{"chain signature", withConfig(t, after1, func(c *protocol.Config) {
			s := *c.Route[0].Signature
			s.Signature = flip(s.Signature)
			c.Route[0].Signature = &s
		}), "st-b", []string{"st-a"}},
		{"false first station", withConfig(t, after1, func(c *protocol.Config) { c.ResultHash, c.ResultSignature = nil, nil }), "st-b", []string{"result"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := w.path(strings.ReplaceAll(c.name, " ", "-") + ".tar")
			writeRef(t, c.img, in, oci.Options{})
			out := w.path("out-" + filepath.Base(in))
			fails(t, exitVerification, nil, append([]string{"pre-run", in, "-o", out}, w.stationArgs(c.station)...), c.mention...)
			if exists(out) {
				t.Errorf("pre-run of a tampered train wrote %s", out)
			}
			fails(t, exitVerification, nil, append([]string{"post-run", in, "--results", w.results(t, c.station), "-o", out}, w.stationArgs(c.station)...), c.mention...)
			if exists(out) {
				t.Errorf("post-run of a tampered train wrote %s", out)
			}
			if c.name != "immutable file changed" && c.name != "undecryptable train file" && c.name != "previous results changed" {
				// Keyless verification catches it too.
				fails(t, exitVerification, nil, []string{"verify", in, "--quiet"})
			}
		})
	}
}

// TestStationErrors: wrong key, wrong station, unreadable key, wrong
// password, missing results and an unreachable registry each give their
// exit code and a one-line message.
func TestStationErrors(t *testing.T) {
	w := newTamperWorld(t)
	out := w.path("never.tar")
	fails(t, exitVerification, nil, []string{"pre-run", w.built, "--station", "st-a", "--key", w.key("st-b"), "-o", out}, "st-a", "wrong private key")
	fails(t, exitVerification, nil, []string{"pre-run", w.built, "--station", "st-z", "--key", w.key("st-a"), "-o", out}, "st-z")
	fails(t, exitIO, nil, []string{"pre-run", w.built, "--station", "st-a", "--key", w.path("missing.pem"), "-o", out}, "missing.pem")
	// Station identity from the old implementation's environment.
	fails(t, exitVerification, []string{"STATION_ID=st-a", "PRIVATE_KEY_PATH=" + w.key("st-b")}, []string{"pre-run", w.built, "-o", out}, "wrong private key")

	// A password-protected key: the wrong password is a usage error and the
	// password never appears in the message.
	k, err := keys.LoadPrivateKey(w.key("st-a"), nil)
	testutil.Must(t, err)
	//lint:ignore SA1019 legacy encrypted PEM is what stations in the field have
	blk, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), []byte("s3cret-pass"), x509.PEMCipherAES256) //nolint:staticcheck
	testutil.Must(t, err)
	encKey := w.path("st-a-enc.pem")
	testutil.Must(t, os.WriteFile(encKey, pem.EncodeToMemory(blk), 0o600))
	r := fails(t, exitUsage, []string{"PRIVATE_KEY_PASSWORD=wrong-pass-123"}, []string{"pre-run", w.built, "--station", "st-a", "--key", encKey, "-o", out}, "st-a-enc.pem")
	if strings.Contains(r.stderr, "wrong-pass-123") {
		t.Error("the password appears in the error")
	}
	fails(t, exitUsage, nil, []string{"verify", w.built, "--station", "st-a", "--key", encKey}, "st-a-enc.pem")
	passFile := w.path("pass")
	testutil.Must(t, os.WriteFile(passFile, []byte("s3cret-pass\n"), 0o600))
	ok(t, "pre-run", w.built, "--station", "st-a", "--key", encKey, "--key-password-file", passFile, "-o", w.path("dec-with-pass.tar"), "--quiet")

	// A missing results directory is the caller's mistake, like a file in its place (issue 28).
	fails(t, exitUsage, nil, append([]string{"post-run", w.built, "--results", w.path("no-such-results"), "-o", out}, w.stationArgs("st-a")...), "no-such-results")
	fails(t, exitUsage, nil, append([]string{"post-run", w.built, "-o", out}, w.stationArgs("st-a")...), "--results")
	fails(t, exitIO, nil, append([]string{"pre-run", "127.0.0.1:1/pht/train:latest", "-o", out}, w.stationArgs("st-a")...), "127.0.0.1:1")
	fails(t, exitUsage, nil, []string{"pre-run"}, "IMAGE")
	fails(t, exitUsage, nil, []string{"pre-run", w.built}, "--station")
	if exists(out) {
		t.Errorf("a failed command wrote %s", out)
	}
}

// TestLeakRefused: a label-less image that carries plaintext train files in
// a layer post-run must keep (a docker commit of a run that also changed
// /tmp) is refused, naming layer and path.
func TestLeakRefused(t *testing.T) {
	w := newTamperWorld(t)
	dec := w.path("dec.tar")
	ok(t, append([]string{"pre-run", w.built, "-o", dec}, w.stationArgs("st-a")...)...)
	img := openRef(t, dec, oci.Options{})
	cf, err := img.ConfigFile()
	testutil.Must(t, err)
	cf = cf.DeepCopy()
	cf.Config.Labels = nil // another tool's image: no phtoci labels
	img, err = mutate.ConfigFile(img, cf)
	testutil.Must(t, err)
	committed := appendFiles(t, img, map[string][]byte{"tmp/run.log": []byte("ran\n"), "opt/pht_results/count.txt": []byte("42\n")})
	in := w.path("committed.tar")
	writeRef(t, committed, in, oci.Options{})
	out := w.path("leak-out.tar")
	fails(t, exitVerification, nil, append([]string{"post-run", in, "-o", out}, w.stationArgs("st-a")...), "layer 1", "opt/pht_train/")
	if exists(out) {
		t.Error("a refused post-run wrote its output")
	}
}
