package oci

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestSkopeoAcceptsOurOutputs: skopeo inspects our registry push (TLS with
// the CA dir, htpasswd), and copies our push, our docker-archive and our
// oci-archive to OCI layouts; the manifests skopeo sees have our digests,
// and what skopeo writes we read back with the same digests (OCI) or diff
// IDs (docker-archive, whose manifest skopeo re-synthesizes).
func TestSkopeoAcceptsOurOutputs(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true, TLS: true})
	o := regOpts(reg)
	creds := reg.Username + ":" + reg.Password
	img := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	d0 := digest(t, img)
	dir := t.TempDir()

	ref := regRef(t, reg, "pht/skopeo:v1")
	testutil.Must1(Write(ctx, ref, img, o))(t)
	var insp struct{ Digest string }
	testutil.Must(t, json.Unmarshal([]byte(run(t, "skopeo", "inspect", "--cert-dir", reg.CertDir, "--creds", creds, "docker://"+reg.Host+"/pht/skopeo:v1")), &insp))
	if insp.Digest != d0.String() {
		t.Errorf("skopeo inspect of our push: digest %s, want %s", insp.Digest, d0)
	}
	fromReg := filepath.Join(dir, "from-reg")
	run(t, "skopeo", "copy", "--src-cert-dir", reg.CertDir, "--src-creds", creds, "docker://"+reg.Host+"/pht/skopeo:v1", "oci:"+fromReg+":x")
	if got := digest(t, open(t, parse(t, "oci:"+fromReg+":x"), Options{})); got != d0 {
		t.Errorf("skopeo copy of our push: digest %s, want %s", got, d0)
	}

	ociTar := filepath.Join(dir, "ours.oci.tar")
	testutil.Must1(Write(ctx, parseOut(t, "oci-archive:"+ociTar+":v1"), img, Options{}))(t)
	raw := run(t, "skopeo", "inspect", "--raw", "oci-archive:"+ociTar+":v1")
	if want := string(testutil.Must1(img.RawManifest())(t)); strings.TrimSpace(raw) != strings.TrimSpace(want) {
		t.Errorf("skopeo inspect --raw of our oci-archive:\n%s\nwant\n%s", raw, want)
	}
	fromOCITar := filepath.Join(dir, "from-oci-tar")
	run(t, "skopeo", "copy", "oci-archive:"+ociTar+":v1", "oci:"+fromOCITar+":y")
	if got := digest(t, open(t, parse(t, "oci:"+fromOCITar+":y"), Options{})); got != d0 {
		t.Errorf("skopeo copy of our oci-archive: digest %s, want %s", got, d0)
	}

	dockerTar := filepath.Join(dir, "ours.docker.tar")
	dImg := open(t, parse(t, vector("train_initial.docker.tar")), Options{})
	testutil.Must1(Write(ctx, parseOut(t, "docker-archive:"+dockerTar+":pht/train:v1"), dImg, Options{}))(t)
	var dinsp struct {
		RepoTags []string
		Layers   []string
	}
	testutil.Must(t, json.Unmarshal([]byte(run(t, "skopeo", "inspect", "docker-archive:"+dockerTar)), &dinsp))
	if len(dinsp.Layers) != 2 {
		t.Errorf("skopeo inspect of our docker-archive: %d layers, want 2", len(dinsp.Layers))
	}
	fromDockerTar := filepath.Join(dir, "from-docker-tar")
	run(t, "skopeo", "copy", "docker-archive:"+dockerTar, "oci:"+fromDockerTar+":z")
	back := open(t, parse(t, "oci:"+fromDockerTar+":z"), Options{})
	if got, want := diffIDs(t, back), diffIDs(t, dImg); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("skopeo copy of our docker-archive: diff IDs %v, want %v", got, want)
	}
	// And a docker-archive skopeo writes is read by us with the same layers.
	skTar := filepath.Join(dir, "skopeo.docker.tar")
	run(t, "skopeo", "copy", "oci-archive:"+ociTar+":v1", "docker-archive:"+skTar+":pht/sk:v1")
	if got, want := diffIDs(t, open(t, parse(t, skTar), Options{})), diffIDs(t, img); len(got) != len(want) || got[0] != want[0] {
		t.Errorf("our read of skopeo's docker-archive: diff IDs %v, want %v", got, want)
	}
}

// TestUmociUnpacksOurLayout: umoci unpacks (rootless) the image we write
// to an OCI layout, and the file the image holds is there with its content.
func TestUmociUnpacksOurLayout(t *testing.T) {
	img := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	dir := t.TempDir()
	lay := filepath.Join(dir, "layout")
	testutil.Must1(Write(ctx, parseOut(t, "oci:"+lay+":v1"), img, Options{}))(t)
	bundle := filepath.Join(dir, "bundle")
	run(t, "umoci", "unpack", "--rootless", "--image", lay+":v1", bundle)
	b := testutil.Must1(os.ReadFile(filepath.Join(bundle, "rootfs", "opt", "train_config.json")))(t)
	if !json.Valid(b) {
		t.Errorf("umoci-unpacked /opt/train_config.json is not JSON: %.80q", b)
	}
	// Whiteouts were applied: the stale plaintext of layer 1 is gone.
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "opt", "pht_train", "stale_old.py")); !os.IsNotExist(err) {
		t.Errorf("stale_old.py present after unpack (whiteout ignored?): %v", err)
	}
}
