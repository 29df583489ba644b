package keys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/youmark/pkcs8"
)

func TestPrivateKeyForms(t *testing.T) {
	k, err := Generate(0)
	if err != nil || k.N.BitLen() != 2048 {
		t.Fatalf("Generate: %v", err)
	}
	pass := []byte("correct horse")
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	//lint:ignore SA1019 testing the legacy form stations have
	legacy, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), pass, x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	enc8, err := pkcs8.MarshalPrivateKey(k, pass, nil)
	if err != nil {
		t.Fatal(err)
	}
	forms := map[string][]byte{
		"pkcs1":           EncodePrivateKeyPEM(k),
		"pkcs8":           pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		"legacy":          pem.EncodeToMemory(legacy),
		"encrypted pkcs8": pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc8}),
	}
	for name, b := range forms {
		got, err := ParsePrivateKey(b, pass)
		if err != nil || !got.Equal(k) {
			t.Errorf("%s: %v", name, err)
		}
		if name == "legacy" || name == "encrypted pkcs8" {
			if _, err := ParsePrivateKey(b, []byte("wrong")); !errors.Is(err, ErrWrongPassword) {
				t.Errorf("%s with a wrong password: %v", name, err)
			}
			if _, err := ParsePrivateKey(b, nil); !errors.Is(err, ErrPasswordRequired) {
				t.Errorf("%s without password: %v", name, err)
			}
		}
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecder, _ := x509.MarshalPKCS8PrivateKey(ec)
	if _, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecder}), nil); !errors.Is(err, ErrNotRSA) {
		t.Errorf("EC key: %v", err)
	}
	if _, err := ParsePrivateKey([]byte("not pem"), nil); !errors.Is(err, ErrNoPEM) {
		t.Errorf("garbage: %v", err)
	}
	if _, err := Generate(1024); !errors.Is(err, ErrKeySize) {
		t.Errorf("1024 bits: %v", err)
	}
}

func TestPublicKeyFormsAndFiles(t *testing.T) {
	k, _ := Generate(2048)
	dir := t.TempDir()
	r, err := GenerateFiles(filepath.Join(dir, "st"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(r.PrivatePath)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := GenerateFiles(filepath.Join(dir, "st"), 2048); !errors.Is(err, os.ErrExist) {
		t.Errorf("overwrite: %v", err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})
	spki, _ := EncodePublicKeyPEM(&k.PublicKey)
	h, _ := EncodePublicKeyHex(&k.PublicKey)
	for name, b := range map[string][]byte{"spki": spki, "pkcs1": pkcs1, "hex": []byte(h), "HEX": []byte(strings.ToUpper(h)), "hex pkcs1": []byte(hex.EncodeToString(pkcs1))} {
		got, err := ParsePublicKey(b)
		if err != nil || !Equal(got, &k.PublicKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if !strings.HasPrefix(h, "2d2d2d2d2d424547494e") {
		t.Errorf("config hex does not start with -----BEGIN: %s", h[:20])
	}
	fp := Fingerprint(&k.PublicKey)
	if !strings.HasPrefix(fp, "SHA256:") || len(fp) != 7+43 {
		t.Errorf("fingerprint %q", fp)
	}
	if _, err := ParsePublicKeyHex("zz"); err == nil {
		t.Error("non-hex accepted")
	}
}

func FuzzParsePublicKeyHex(f *testing.F) {
	k, _ := Generate(2048)
	h, _ := EncodePublicKeyHex(&k.PublicKey)
	f.Add(h)
	f.Add(strings.ToUpper(h))
	f.Add("2d2d2d2d2d424547494e")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := ParsePublicKeyHex(s)
		if err == nil && pub == nil {
			t.Fatal("nil key without error")
		}
	})
}

// TestEncryptedPKCS8RoundTrip: a key written encrypted reads back with its
// password only, as the same key.
func TestEncryptedPKCS8RoundTrip(t *testing.T) {
	k, err := Generate(2048)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodeEncryptedPrivateKeyPEM(k, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePrivateKey(b, []byte("s3cret"))
	if err != nil || !got.Equal(k) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParsePrivateKey(b, nil); !errors.Is(err, ErrPasswordRequired) {
		t.Errorf("no password: %v", err)
	}
	if _, err := ParsePrivateKey(b, []byte("other")); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := EncodeEncryptedPrivateKeyPEM(k, nil); !errors.Is(err, ErrPasswordRequired) {
		t.Errorf("empty password: %v", err)
	}
}
