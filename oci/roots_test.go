package oci

import (
	"crypto/x509"
	"os"
	"os/exec"
	"testing"
)

// TestCompiledRootsWhenSystemHasNone runs itself in a child whose system
// has no CA certificates (SSL_CERT_FILE and SSL_CERT_DIR point at nothing):
// after fallbackRoots, the pool Go verifies with holds the compiled-in
// roots. With system roots present they stay as they are.
func TestCompiledRootsWhenSystemHasNone(t *testing.T) {
	if os.Getenv("PHTOCI_ROOTS_CHILD") == "1" {
		before, err := x509.SystemCertPool()
		if err != nil {
			t.Fatal(err)
		}
		if !before.Equal(x509.NewCertPool()) {
			t.Fatal("child: the system pool is not empty; the test setup failed")
		}
		fallbackRoots()
		after, err := x509.SystemCertPool()
		if err != nil {
			t.Fatal(err)
		}
		if after.Equal(x509.NewCertPool()) {
			t.Fatal("no roots after fallbackRoots: TLS registries could not be verified in phtoci's image")
		}
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCompiledRootsWhenSystemHasNone$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PHTOCI_ROOTS_CHILD=1", "SSL_CERT_FILE="+dir+"/none.pem", "SSL_CERT_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestCompiledRootsKeepSystemRoots(t *testing.T) {
	sys, err := x509.SystemCertPool()
	if err != nil || sys.Equal(x509.NewCertPool()) {
		t.Fatalf("this machine has no system roots (%v): install ca-certificates", err)
	}
	fallbackRoots()
	after, err := x509.SystemCertPool()
	if err != nil {
		t.Fatal(err)
	}
	if !after.Equal(sys) {
		t.Fatal("fallbackRoots replaced the system's roots")
	}
}
