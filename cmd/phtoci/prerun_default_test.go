package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
)

// tags lists the tags of repo on reg.
func tags(t *testing.T, reg *testreg.Registry, repo string) []string {
	t.Helper()
	r, err := name.NewRepository(reg.Host + "/" + repo)
	testutil.Must(t, err)
	ts, err := remote.List(r, remote.WithTransport(reg.Transport()))
	testutil.Must(t, err)
	slices.Sort(ts)
	return ts
}

// TestPreRunRegistryDefaultIsLocalFile (issue 16 item 1): pre-run of a
// registry input without -o never pushes the plaintext: it writes the
// oci-archive REPOSITORY_TAG.decrypted.oci.tar in the current directory,
// 0600, and the registry gets no new tag. A registry -o still pushes when
// named: quietly to a registry on this host, with a warning on stderr to
// any other.
func TestPreRunRegistryDefaultIsLocalFile(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st-a")
	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	ref := reg.Host + "/station-aachen/train-42:latest"
	writeRef(t, openRef(t, built, oci.Options{}), ref, oci.Options{})
	repo := "station-aachen/train-42"

	cwd := t.TempDir()
	st := w.stationArgs("st-a")
	r := runCmdIn(t, cwd, phtociBin, append([]string{"pre-run", ref}, st...)...)
	if r.code != 0 {
		t.Fatalf("pre-run: exit %d: %s", r.code, r.stderr)
	}
	file := filepath.Join(cwd, "train-42_latest.decrypted.oci.tar")
	wantMode(t, file, 0o600)
	if !strings.Contains(r.stdout, "train-42_latest.decrypted.oci.tar") {
		t.Errorf("pre-run output does not name the file: %s", r.stdout)
	}
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("unexpected warning: %s", r.stderr)
	}
	n, lb := labels(t, openRef(t, "oci-archive:"+file, oci.Options{}))
	if n != 2 || lb[train.StateLabel] != "decrypted" {
		t.Errorf("%s: %d layers, labels %v; want the decrypted image", file, n, lb)
	}
	if got := tags(t, reg, repo); !slices.Equal(got, []string{"latest"}) {
		t.Fatalf("registry tags after pre-run: %v, want only latest (nothing pushed)", got)
	}

	// By digest: the file is named after the digest.
	d, err := openRef(t, ref, oci.Options{}).Digest()
	testutil.Must(t, err)
	r = runCmdIn(t, cwd, phtociBin, append([]string{"pre-run", reg.Host + "/" + repo + "@" + d.String()}, st...)...)
	if r.code != 0 {
		t.Fatalf("pre-run by digest: exit %d: %s", r.code, r.stderr)
	}
	wantMode(t, filepath.Join(cwd, "train-42_sha256-"+d.Hex[:12]+".decrypted.oci.tar"), 0o600)

	// Named registry outputs still work: on this host without a warning,
	// elsewhere with one (0.0.0.0 reaches the test registry but is not a
	// loopback name).
	r = runCmdIn(t, cwd, phtociBin, append([]string{"pre-run", ref, "-o", reg.Host + "/" + repo + ":local-dec"}, st...)...)
	if r.code != 0 || strings.Contains(r.stderr, "warning") {
		t.Fatalf("pre-run -o loopback registry: exit %d, stderr %q; want 0 and no warning", r.code, r.stderr)
	}
	port := reg.Host[strings.LastIndex(reg.Host, ":")+1:]
	r = runCmdIn(t, cwd, phtociBin, append([]string{"pre-run", ref, "-o", "0.0.0.0:" + port + "/" + repo + ":remote-dec", "--insecure"}, st...)...)
	if r.code != 0 {
		t.Fatalf("pre-run -o 0.0.0.0 registry: exit %d: %s", r.code, r.stderr)
	}
	for _, m := range []string{"warning", "0.0.0.0:" + port + "/" + repo + ":remote-dec", "plaintext"} {
		if !strings.Contains(r.stderr, m) {
			t.Errorf("pushing plaintext to a non-loopback registry: stderr %q does not mention %q", r.stderr, m)
		}
	}
	if got := tags(t, reg, repo); !slices.Equal(got, []string{"latest", "local-dec", "remote-dec"}) {
		t.Errorf("registry tags: %v, want latest, local-dec, remote-dec", got)
	}
	ents, err := os.ReadDir(cwd)
	testutil.Must(t, err)
	if len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("current directory holds %v, want the two default archives only", names)
	}
}
