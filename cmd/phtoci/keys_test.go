package main

import (
	"encoding/hex"
	"os"
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
