package main

import (
	"debug/buildinfo"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testOptions(dir string, bins map[string]string) options {
	return options{binaries: bins, out: filepath.Join(dir, "phtoci.oci.tar"), tag: "latest", version: "1.2.3",
		revision: "0123456789abcdef0123456789abcdef01234567", source: "https://github.com/phtoci/phtoci", created: time.Unix(1767225600, 0).UTC()}
}

func command(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// TestImageIsStandard builds the image index from stand-in binaries and has
// the real skopeo read both platforms' images and umoci unpack one: the
// index, user, working directory, labels, /tmp and /etc/passwd.
func TestImageIsStandard(t *testing.T) {
	dir := t.TempDir()
	bins := map[string]string{}
	for _, arch := range []string{"amd64", "arm64"} {
		bins["linux/"+arch] = filepath.Join(dir, "phtoci-"+arch)
		if err := os.WriteFile(bins["linux/"+arch], []byte("#!/bin/sh\necho phtoci "+arch+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o := testOptions(dir, bins)
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	raw := command(t, "skopeo", "inspect", "--raw", "oci-archive:"+o.out+":latest")
	var idx struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			Platform struct{ OS, Architecture string } `json:"platform"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil || idx.MediaType != "application/vnd.oci.image.index.v1+json" || len(idx.Manifests) != 2 ||
		idx.Manifests[0].Platform.Architecture != "amd64" || idx.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index: %s (%v)", raw, err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		raw := command(t, "skopeo", "inspect", "--override-arch", arch, "--override-os", "linux", "--config", "oci-archive:"+o.out+":latest")
		var cfg struct {
			Architecture string `json:"architecture"`
			Config       struct {
				Entrypoint []string
				User       string
				WorkingDir string
				Labels     map[string]string
				Env        []string
				Volumes    map[string]struct{}
			} `json:"config"`
		}
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		c := cfg.Config
		if cfg.Architecture != arch || len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/usr/local/bin/phtoci" || c.User != "65532:65532" || c.WorkingDir != "/work" ||
			c.Labels["org.opencontainers.image.version"] != "1.2.3" || c.Labels["org.opencontainers.image.revision"] != o.revision ||
			c.Labels["org.opencontainers.image.source"] != o.source {
			t.Errorf("%s config: %s", arch, raw)
		}
		if _, ok := c.Volumes[StateDir]; !ok || len(c.Volumes) != 1 ||
			!slices.Contains(c.Env, "PHTOCI_LEDGER="+StateDir+"/ledger.jsonl") || !slices.Contains(c.Env, "PHTOCI_CACHE="+StateDir+"/cache") {
			t.Errorf("%s config: the state directory %s is not the one volume holding ledger and cache: %s", arch, StateDir, raw)
		}
	}
	bundle := unpack(t, dir, o.out, "amd64")
	rootfs := filepath.Join(bundle, "rootfs")
	if b, err := os.ReadFile(filepath.Join(rootfs, "usr/local/bin/phtoci")); err != nil || string(b) != "#!/bin/sh\necho phtoci amd64\n" {
		t.Errorf("amd64 binary: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "tmp")); err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("/tmp: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "work")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uid {
		t.Errorf("/work not owned by %d: %v", uid, err)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, StateDir)); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uid || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s not private to %d: %v", StateDir, uid, err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc/passwd")); err != nil || !strings.Contains(string(b), "phtoci:x:65532:65532:") {
		t.Errorf("/etc/passwd: %q %v", b, err)
	}
	// Same inputs, same bytes.
	first, _ := os.ReadFile(o.out)
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	if second, _ := os.ReadFile(o.out); string(first) != string(second) {
		t.Errorf("two builds of the image differ")
	}
}

// unpack copies arch's image out of the archive with skopeo and unpacks it
// with umoci (as root: owners and modes as in the image).
func unpack(t *testing.T, dir, archive, arch string) string {
	t.Helper()
	layout := filepath.Join(dir, "layout-"+arch)
	command(t, "skopeo", "copy", "-q", "--override-arch", arch, "--override-os", "linux", "oci-archive:"+archive+":latest", "oci:"+layout+":latest")
	bundle := filepath.Join(dir, "bundle-"+arch)
	command(t, "umoci", "unpack", "--image", layout+":latest", bundle)
	return bundle
}

// TestImageRunsChrooted builds the real static binary into the image,
// unpacks it with umoci and runs a station's pre-run and post-run inside
// it (chroot, as the image's user, in /work, with only STATION_ID and
// PRIVATE_KEY_PATH set) on a train built from the bundled sample. The old
// image (no /tmp, no user, no /work) fails this.
func TestImageRunsChrooted(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test unpacks an image and chroots into it: run it as root (make test does in CI)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "phtoci")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../../cmd/phtoci")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	o := testOptions(dir, map[string]string{"linux/" + runtime.GOARCH: bin})
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(unpack(t, dir, o.out, runtime.GOARCH), "rootfs")
	inImage := filepath.Join(rootfs, "usr/local/bin/phtoci")
	info, err := buildinfo.ReadFile(inImage)
	if err != nil {
		t.Fatal(err)
	}
	roots := false
	for _, d := range info.Deps {
		roots = roots || d.Path == "golang.org/x/crypto/x509roots/fallback"
	}
	if !roots {
		t.Errorf("the image's binary has no compiled-in roots (golang.org/x/crypto/x509roots/fallback)")
	}

	// Keys and a train, made outside with the same binary; the station key
	// is mounted read-only in a real run, here a file the user can read.
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"researcher", "builder", "station-aachen", "station-leipzig"} {
		command(t, bin, "keys", "generate", filepath.Join(keys, k))
	}
	sample, _ := filepath.Abs("../../testdata/sample")
	work := filepath.Join(rootfs, "work")
	command(t, bin, "build", "oci-archive:"+filepath.Join(sample, "master.oci.tar"), "--files", filepath.Join(sample, "train"),
		"--query", filepath.Join(sample, "query.json"), "--creator-id", "researcher-1",
		"--user-key", filepath.Join(keys, "researcher.pem"), "--builder-key", filepath.Join(keys, "builder.pem"),
		"--route", "station-aachen="+filepath.Join(keys, "station-aachen.pub.pem"),
		"--route", "station-leipzig="+filepath.Join(keys, "station-leipzig.pub.pem"),
		"-o", "oci-archive:"+filepath.Join(work, "train.tar"), "--quiet")
	if err := os.MkdirAll(filepath.Join(rootfs, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(keys, "station-aachen.pem"))
	if err := os.WriteFile(filepath.Join(rootfs, "keys", "station-aachen.pem"), key, 0o400); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(rootfs, "keys", "station-aachen.pem"), filepath.Join(work, "train.tar")} {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(work, "results", "stations"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "results", "stations", "aachen.json"), []byte(`{"count": 41}`), 0o644); err != nil {
		t.Fatal(err)
	}

	// As a container runtime does: the image's environment (no HOME),
	// plus the station's.
	run := func(args ...string) ([]byte, error) {
		cmd := exec.Command("/usr/local/bin/phtoci", args...)
		cmd.Dir = "/work"
		cmd.Env = []string{"PATH=/usr/local/bin", "TMPDIR=/tmp", "PHTOCI_LEDGER=" + StateDir + "/ledger.jsonl", "PHTOCI_CACHE=" + StateDir + "/cache",
			"STATION_ID=station-aachen", "PRIVATE_KEY_PATH=/keys/station-aachen.pem"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		return cmd.CombinedOutput()
	}
	inside := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("phtoci %s in the image: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := inside("--version"); !strings.HasPrefix(out, "phtoci ") {
		t.Errorf("--version in the image: %q", out)
	}
	inside("pre-run", "oci-archive:train.tar", "-o", "oci-archive:decrypted.tar", "--quiet")
	inside("post-run", "oci-archive:train.tar", "--results", "results", "-o", "oci-archive:signed.tar", "--quiet")
	// The ledger is in the state volume, not in the working directory: a
	// second post-run of the train is refused.
	if b, err := os.ReadFile(filepath.Join(rootfs, StateDir, "ledger.jsonl")); err != nil || !strings.Contains(string(b), `"station":"station-aachen"`) {
		t.Errorf("ledger in %s: %q %v", StateDir, b, err)
	}
	if out, err := run("post-run", "oci-archive:train.tar", "--results", "results", "-o", "oci-archive:again.tar", "--quiet"); err == nil || !strings.Contains(string(out), "already processed") {
		t.Errorf("a second post-run in the image: %v\n%s", err, out)
	}
	for _, f := range []string{"decrypted.tar", "signed.tar"} {
		if fi, err := os.Stat(filepath.Join(work, f)); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("/work/%s not written by the image's user: %v", f, err)
		}
	}
	// The signed train verifies outside, for the next station.
	command(t, bin, "verify", "oci-archive:"+filepath.Join(work, "signed.tar"), "--station", "station-leipzig",
		"--key", filepath.Join(keys, "station-leipzig.pem"), "--quiet")
}
