package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// TestPrivateCA (issue 16 item 9): a TLS registry whose certificate a CA
// made in the test signed: verify fails without the CA, works with
// --cert-dir, and with the CA in /etc/containers/certs.d/HOST:PORT/ or
// /etc/docker/certs.d/HOST:PORT/.
func TestPrivateCA(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{TLS: true})
	w := newWorld(t, "st-a")
	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	ref := reg.Host + "/pht/x:latest"
	writeRef(t, openRef(t, built, oci.Options{}), ref, oci.Options{Transport: reg.Transport()})

	// Issue 28: the error names every directory searched for that host
	// and where a CA goes; the CLI adds --cert-dir.
	fails(t, exitIO, nil, []string{"verify", ref, "--quiet"}, reg.Host, "certificate",
		"CA certificates searched for "+reg.Host+": the system's, /etc/containers/certs.d/"+reg.Host+" (missing), /etc/docker/certs.d/"+reg.Host+" (missing)",
		"add the registry's CA certificate (PEM) to one of them as a *.crt file, e.g. /etc/containers/certs.d/"+reg.Host+"/ca.crt", "--cert-dir DIR")
	other := t.TempDir()
	fails(t, exitIO, nil, []string{"verify", ref, "--quiet", "--cert-dir", other}, "searched for "+reg.Host+": the system's, "+other+", /etc/containers/certs.d/")
	ok(t, "verify", ref, "--quiet", "--cert-dir", reg.CertDir)
	fails(t, exitUsage, nil, []string{"verify", ref, "--quiet", "--cert-dir", filepath.Join(t.TempDir(), "none")}, "--cert-dir")

	ca, err := os.ReadFile(reg.CAFile)
	testutil.Must(t, err)
	for _, root := range oci.DefaultCertsDirs {
		dir := filepath.Join(root, reg.Host)
		if !exists(root) {
			t.Cleanup(func() { os.Remove(root) }) // only if still empty
		}
		testutil.Must(t, os.MkdirAll(dir, 0o755))
		t.Cleanup(func() { os.RemoveAll(dir) })
		testutil.Must(t, os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644))
		ok(t, "verify", ref, "--quiet")
		testutil.Must(t, os.RemoveAll(dir))
		fails(t, exitIO, nil, []string{"verify", ref, "--quiet"}, "certificate")
	}
}
