package main

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/testutil"
)

// referencePreRun is a station's pre-run done on the reference's terms, as
// testdata/vectors/README.md describes them, with the standard library only
// (none of phtoci's protocol code): the config is read as any JSON, only
// the station's own route entry's encrypted_key is read (§3), the key is
// unwrapped with OAEP-SHA-512 (§3), every file is IV || AES-256-CBC with
// PKCS#7 (§2), and the immutable hash (§4), user signature (§5), results
// hash (§6), results signature (§7) and chain signatures (§8) are checked.
// It returns the plaintext results by path.
func referencePreRun(t *testing.T, img v1.Image, station string, priv *rsa.PrivateKey) map[string][]byte {
	t.Helper()
	tr := openTrain(t, img)
	var cfg map[string]any
	testutil.Must(t, json.Unmarshal(tr.ConfigRaw, &cfg))
	route, _ := cfg["route"].([]any)
	sort.SliceStable(route, func(i, j int) bool {
		return route[i].(map[string]any)["index"].(float64) < route[j].(map[string]any)["index"].(float64)
	})
	unhex := func(v any, field string) []byte {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("%s: %v is not a hex string", field, v)
		}
		b, err := hex.DecodeString(strings.ToLower(s))
		if err != nil {
			t.Fatalf("%s: %v", field, err)
		}
		return b
	}
	pub := func(v any, field string) *rsa.PublicKey {
		blk, _ := pem.Decode(unhex(v, field))
		if blk == nil {
			t.Fatalf("%s: not PEM", field)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", field, err)
		}
		return k.(*rsa.PublicKey)
	}
	pos := -1
	for i, e := range route {
		e := e.(map[string]any)
		if fmt.Sprint(e["station"]) == station {
			pos = i
		}
		// The reference reads no other entry's key: any value is fine
		// there, but the builder's own form is null or hex.
		if k := e["encrypted_key"]; k != nil {
			unhex(k, fmt.Sprintf("route[%d].encrypted_key", i))
		}
	}
	if pos < 0 {
		t.Fatalf("station %s not on the route", station)
	}
	own := route[pos].(map[string]any)
	key, err := rsa.DecryptOAEP(sha512.New(), nil, priv, unhex(own["encrypted_key"], "own encrypted_key"), nil)
	if err != nil {
		t.Fatalf("route[%d].encrypted_key does not unwrap with %s's key: %v", pos, station, err)
	}
	decrypt := func(fsys fs.FS, name string) []byte {
		b, err := fs.ReadFile(fsys, name)
		testutil.Must(t, err)
		if len(b) < 32 || len(b)%16 != 0 {
			t.Fatalf("%s: %d bytes is not IV || CBC blocks", name, len(b))
		}
		blk, err := aes.NewCipher(key)
		testutil.Must(t, err)
		out := make([]byte, len(b)-16)
		cipher.NewCBCDecrypter(blk, b[:16]).CryptBlocks(out, b[16:])
		p := int(out[len(out)-1])
		if p < 1 || p > 16 || !bytes.Equal(out[len(out)-p:], bytes.Repeat([]byte{byte(p)}, p)) {
			t.Fatalf("%s: bad padding", name)
		}
		return out[:len(out)-p]
	}
	sid := unhex(cfg["session_id"], "session_id")
	creator := cfg["creator"].(map[string]any)
	h := sha512.New()
	h.Write([]byte(fmt.Sprint(creator["id"])))
	for _, n := range cfg["file_list"].([]any) {
		h.Write(decrypt(tr.TrainFS(), strings.TrimPrefix(n.(string), "./")))
	}
	h.Write(sid)
	if _, err := fs.Stat(tr.TrainFS(), "query.json"); err == nil {
		h.Write(decrypt(tr.TrainFS(), "query.json"))
	}
	hash := unhex(cfg["hash"], "hash")
	if !bytes.Equal(h.Sum(nil), hash) {
		t.Fatal("immutable hash differs")
	}
	hh := sha512.Sum512(hash)
	if err := rsa.VerifyPKCS1v15(pub(creator["rsa_public_key"], "creator.rsa_public_key"), crypto.SHA512, hh[:], unhex(cfg["signature"], "signature")); err != nil {
		t.Fatalf("user signature: %v", err)
	}
	results := map[string][]byte{}
	if cfg["result_hash"] == nil {
		return results
	}
	var names []string
	testutil.Must(t, fs.WalkDir(tr.ResultsFS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			names = append(names, p)
		}
		return err
	}))
	rh := sha512.New()
	for _, n := range names { // fs.WalkDir's order is the archive walk order (§6)
		results[n] = decrypt(tr.ResultsFS(), n)
		rh.Write(results[n])
	}
	rh.Write(sid)
	resultHash := unhex(cfg["result_hash"], "result_hash")
	if !bytes.Equal(rh.Sum(nil), resultHash) {
		t.Fatal("results hash differs")
	}
	salt := &rsa.PSSOptions{SaltLength: 190, Hash: crypto.SHA512}
	prev := route[pos-1].(map[string]any)
	if err := rsa.VerifyPSS(pub(prev["rsa_public_key"], "previous rsa_public_key"), crypto.SHA512, resultHash, unhex(cfg["result_signature"], "result_signature"), salt); err != nil {
		t.Fatalf("result signature: %v", err)
	}
	for i := 0; i < pos; i++ {
		e := route[i].(map[string]any)
		sig := e["signature"].(map[string]any)
		if err := rsa.VerifyPSS(pub(e["rsa_public_key"], "rsa_public_key"), crypto.SHA512, unhex(sig["digest"], "digest"), unhex(sig["signature"], "signature"), salt); err != nil {
			t.Fatalf("route[%d] chain signature: %v", i, err)
		}
	}
	return results
}

func loadPriv(t *testing.T, path string) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	testutil.Must(t, err)
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	testutil.Must(t, err)
	return k
}
