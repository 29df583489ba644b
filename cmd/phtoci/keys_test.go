package main

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
)

// TestKeysCommands: generate, public (the config's hex form) and
// fingerprint agree with each other and with the reference's vectors.
func TestKeysCommands(t *testing.T) {
	dir := t.TempDir()
	ok(t, "keys", "generate", filepath.Join(dir, "k"))
	fi, err := os.Stat(filepath.Join(dir, "k.pem"))
	testutil.Must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", fi.Mode().Perm())
	}
	fails(t, exitIO, nil, []string{"keys", "generate", filepath.Join(dir, "k")}, "k.pem")
	hexPriv := strings.TrimSpace(ok(t, "keys", "public", filepath.Join(dir, "k.pem")).stdout)
	hexPub := strings.TrimSpace(ok(t, "keys", "public", filepath.Join(dir, "k.pub.pem")).stdout)
	if hexPriv != hexPub || !strings.HasPrefix(hexPub, "2d2d2d2d2d424547494e") {
		t.Fatalf("keys public: %q vs %q", hexPriv, hexPub)
	}
	fpFile := strings.TrimSpace(ok(t, "keys", "fingerprint", filepath.Join(dir, "k.pub.pem")).stdout)
	fpHex := strings.TrimSpace(ok(t, "keys", "fingerprint", hexPub).stdout)
	if fpFile != fpHex || !strings.HasPrefix(fpFile, "SHA256:") {
		t.Fatalf("fingerprints %q vs %q", fpFile, fpHex)
	}
	// The reference's station key gives exactly the vectors' config hex.
	got := strings.TrimSpace(ok(t, "keys", "public", filepath.Join(vectors, "keys", "station_1.pem")).stdout)
	want, err := os.ReadFile(filepath.Join(vectors, "keys", "station_1.pub.pem"))
	testutil.Must(t, err)
	if !strings.EqualFold(got, hex.EncodeToString(want)) {
		t.Error("keys public of the reference's station_1 key differs from its public PEM's hex")
	}
}

// TestKeysGenerateEncrypted (issue 28): keys generate --password-file
// writes an encrypted PKCS#8 key (0600) that phtoci reads back with the
// password (and refuses without it or with another), that OpenSSL reads
// with the same password, and whose public half is NAME.pub.pem; the
// password never appears in any output.
func TestKeysGenerateEncrypted(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass.txt")
	testutil.Must(t, os.WriteFile(pass, []byte("correct horse battery\n"), 0o600))
	k := filepath.Join(dir, "st")
	r := ok(t, "keys", "generate", k, "--password-file", pass)
	if !strings.Contains(r.stdout, "encrypted") || strings.Contains(r.stdout+r.stderr, "horse") {
		t.Errorf("keys generate --password-file: %s", r.stdout)
	}
	wantMode(t, k+".pem", 0o600)
	b, err := os.ReadFile(k + ".pem")
	testutil.Must(t, err)
	if !strings.HasPrefix(string(b), "-----BEGIN ENCRYPTED PRIVATE KEY-----\n") {
		t.Fatalf("not encrypted PKCS#8: %.40q", b)
	}
	pub := strings.TrimSpace(ok(t, "keys", "public", k+".pub.pem").stdout)
	if got := strings.TrimSpace(ok(t, "keys", "public", k+".pem", "--key-password-file", pass).stdout); got != pub {
		t.Errorf("the encrypted key's public half differs from %s.pub.pem", k)
	}
	fails(t, exitUsage, nil, []string{"keys", "public", k + ".pem"}, "password")
	wrong := filepath.Join(dir, "wrong.txt")
	testutil.Must(t, os.WriteFile(wrong, []byte("wrong"), 0o600))
	fails(t, exitUsage, nil, []string{"keys", "public", k + ".pem", "--key-password-file", wrong}, "password")

	// OpenSSL reads it with the password: the same public key.
	out, err := exec.Command("openssl", "pkey", "-in", k+".pem", "-passin", "file:"+pass, "-pubout").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkey: %v\n%s", err, out)
	}
	want, err := os.ReadFile(k + ".pub.pem")
	testutil.Must(t, err)
	if string(out) != string(want) {
		t.Errorf("openssl's public key differs:\n%s\nwant\n%s", out, want)
	}

	empty := filepath.Join(dir, "empty.txt")
	testutil.Must(t, os.WriteFile(empty, []byte("\n"), 0o600))
	fails(t, exitUsage, nil, []string{"keys", "generate", filepath.Join(dir, "e"), "--password-file", empty}, "empty password")
	fails(t, exitUsage, nil, []string{"keys", "generate", filepath.Join(dir, "m"), "--password-file", filepath.Join(dir, "missing")}, "--password-file")
}
