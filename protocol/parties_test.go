package protocol

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/phtoci/phtoci/keys"
)

// TestPartiesChecked: Build refuses duplicate stations and keys under
// MinKeyBits; Verify (and so verify, pre-run, post-run, decrypt) refuses
// configs carrying them, naming the field.
func TestPartiesChecked(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallHex, err := keys.EncodePublicKeyHex(&small.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	route := func(ids ...string) []RouteStation {
		var r []RouteStation
		for _, id := range ids {
			r = append(r, RouteStation{ID: id, EcoSystem: "tue", PublicKey: &genKey(t, id).PublicKey})
		}
		return r
	}
	base := BuildOptions{CreatorID: "researcher-7", UserKey: genKey(t, "user"), BuilderKey: genKey(t, "builder"), Route: route("st-1", "st-2")}
	builds := []struct {
		name, mention string
		edit          func(*BuildOptions)
	}{
		{"duplicate station", `"st-1" is also route[0]`, func(o *BuildOptions) { o.Route = route("st-1", "st-2", "st-1") }},
		{"small station key", "route[1] (station st-2): 1024-bit", func(o *BuildOptions) { o.Route[1].PublicKey = &small.PublicKey }},
		{"small builder key", "builder key: 1024-bit", func(o *BuildOptions) { o.BuilderKey = small }},
		{"small user key", "creator key: 1024-bit", func(o *BuildOptions) { o.UserKey = small }},
	}
	for _, c := range builds {
		t.Run("build "+c.name, func(t *testing.T) {
			o := base
			o.Route = route("st-1", "st-2")
			c.edit(&o)
			_, err := Build(o, trainFiles(), memSink{})
			if !errors.Is(err, ErrBuild) || !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("got %v, want ErrBuild mentioning %q", err, c.mention)
			}
		})
	}

	cfg, files := buildTrain(t, "st-1", "st-2")
	edit := func(fn func(*Config)) *Config { c := cfg.Clone(); fn(c); return c }
	configs := []struct {
		name, mention string
		cfg           *Config
	}{
		{"duplicate station", `route[1].station: "st-1" is also route[0]`, edit(func(c *Config) { c.Route[1].Station = "st-1" })},
		{"small station key", "route[1].rsa_public_key (station st-2): 1024-bit RSA key, at least 2048", edit(func(c *Config) { c.Route[1].RSAPublicKey = smallHex })},
		{"small builder key", "build.rsa_public_key: 1024-bit", edit(func(c *Config) { c.Build.RSAPublicKey = smallHex })},
		{"small creator key", "creator.rsa_public_key: 1024-bit", edit(func(c *Config) { c.Creator.RSAPublicKey = smallHex })},
	}
	for _, c := range configs {
		t.Run("config "+c.name, func(t *testing.T) {
			if _, err := Verify(c.cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("Verify: %v, want ErrInvalidConfig mentioning %q", err, c.mention)
			}
			if err := PreRunCheck(c.cfg, files.asFS("pht_train"), fstest.MapFS{}, st(t, "st-1"), memSink{}); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("PreRunCheck: %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// deepContext is compact JSON nested depth levels deep around n numbers:
// small as received, large once re-indented (2 spaces per level per line).
func deepContext(depth, n int) json.RawMessage {
	return json.RawMessage(strings.Repeat("[", depth) + strings.TrimSuffix(strings.Repeat("1,", n), ",") + strings.Repeat("]", depth))
}

// TestPostRunConfigWriteBack: the size post-run predicts for its new config
// is exact, and an input whose @context would re-indent past MaxConfigSize
// is refused before anything is signed.
func TestPostRunConfigWriteBack(t *testing.T) {
	cfg, files := buildTrain(t, "st-1", "st-2", "st-3")
	plain := memSink{}
	if err := PreRunCheck(cfg, files.asFS("pht_train"), fstest.MapFS{}, st(t, "st-1"), plain); err != nil {
		t.Fatal(err)
	}
	want, err := writeBackSize(cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := postRunUpdate(cfg, plain.asFS("pht_train"), fstest.MapFS{"r": {Data: []byte("r")}}, st(t, "st-1"), memSink{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ConfigJSON) != want {
		t.Errorf("predicted %d bytes, post-run wrote %d", want, len(res.ConfigJSON))
	}

	big := cfg.Clone()
	big.Context = deepContext(30, 40000) // 80 KB compact, about 2.5 MB indented
	if len(big.Context) > MaxConfigSize/8 {
		t.Fatalf("the input context is %d bytes; the attack is a small input", len(big.Context))
	}
	_, err = postRunUpdate(big, plain.asFS("pht_train"), fstest.MapFS{}, st(t, "st-1"), memSink{})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "train_config.json") || !strings.Contains(err.Error(), "1048576-byte limit") {
		t.Fatalf("oversized write-back: %v", err)
	}
}

// TestParseConfigRefusesWhatPostRunCannotWriteBack: the same small
// @context is refused where the config is first read, naming the limit,
// so verify and pre-run do not accept what the post-run after them
// refuses; a config under the limit, and a finished route (no post-run to
// come), are read.
func TestParseConfigRefusesWhatPostRunCannotWriteBack(t *testing.T) {
	cfg, _ := buildTrain(t, "st-1", "st-2")
	compact := func(c *Config) []byte {
		raw, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	big := cfg.Clone()
	big.Context = deepContext(30, 40000)
	in := compact(big)
	if len(in) > MaxConfigSize/8 {
		t.Fatalf("the input config is %d bytes; the attack is a small input", len(in))
	}
	_, err := ParseConfig(in)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "1048576-byte limit (MaxConfigSize)") || !strings.Contains(err.Error(), "next post-run") {
		t.Fatalf("ParseConfig of a config the next post-run cannot write back: %v", err)
	}
	fits := cfg.Clone()
	fits.Context = deepContext(2, 1000)
	if _, err := ParseConfig(compact(fits)); err != nil {
		t.Fatalf("ParseConfig of a config that fits: %v", err)
	}
	// A finished route has no post-run to come: the researcher reads it.
	for i := range big.Route {
		big.Route[i].Signature = &ChainSignature{Digest: strings.Repeat("00", 64), Signature: strings.Repeat("00", 256)}
	}
	if _, err := ParseConfig(compact(big)); err != nil {
		t.Fatalf("ParseConfig of a finished route: %v", err)
	}
}
