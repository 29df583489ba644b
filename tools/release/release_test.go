package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"aead.dev/minisign"
	cdx "github.com/CycloneDX/cyclonedx-go"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// copyTree copies the files git tracks in root to dst: a source tree like a
// fresh checkout of the commit, without .git.
func copyTree(t *testing.T, root, dst string) {
	t.Helper()
	for _, name := range strings.Split(git(t, root, "ls-files", "-z"), "\x00") {
		if name == "" {
			continue
		}
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRelease makes the release twice from two copies of the source tree
// at different paths, the second with an empty build cache, and requires
// the same bytes in every file; then checks SHA256SUMS, the SBOM and the
// .deb, installed into a scratch root, whose binary prints its version and
// makes keys as make demo's first step does. make test builds this
// machine's linux architecture; make release-check sets
// PHTOCI_RELEASE_PLATFORMS=linux/amd64,linux/arm64 and adds the image.
func TestRelease(t *testing.T) {
	root := git(t, ".", "rev-parse", "--show-toplevel")
	plats := "linux/" + runtime.GOARCH
	full := os.Getenv("PHTOCI_RELEASE_PLATFORMS") != ""
	if full {
		plats = os.Getenv("PHTOCI_RELEASE_PLATFORMS")
	}
	epoch, err := strconv.ParseInt(git(t, root, "log", "-1", "--format=%ct"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	// A signing key of the test's own, encrypted as minisign keeps keys.
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := minisign.EncryptKey("release test password", priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pwFile, pubFile := filepath.Join(tmp, "release.key"), filepath.Join(tmp, "release.pw"), filepath.Join(tmp, "release.pub")
	pubText, _ := pub.MarshalText()
	for f, b := range map[string][]byte{keyFile: encKey, pwFile: []byte("release test password\n"), pubFile: append(pubText, '\n')} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := config{version: "1.2.3-test", revision: git(t, root, "rev-parse", "HEAD"), epoch: epoch,
		platforms: strings.Split(plats, ","), image: full, signKey: keyFile, signPassword: pwFile}
	var outs [2]string
	srcs := []string{filepath.Join(tmp, "a", "phtoci"), filepath.Join(tmp, "b", "elsewhere", "src")}
	for _, src := range srcs {
		copyTree(t, root, src)
	}
	for i, src := range srcs {
		if i == 1 {
			t.Setenv("GOCACHE", filepath.Join(tmp, "gocache"))
		}
		c.root, c.out = src, filepath.Join(tmp, "dist"+strconv.Itoa(i))
		if err := release(c); err != nil {
			t.Fatalf("release %d: %v", i+1, err)
		}
		outs[i] = c.out
	}
	names := func(dir string) []string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return n
	}
	first, second := names(outs[0]), names(outs[1])
	if strings.Join(first, " ") != strings.Join(second, " ") {
		t.Fatalf("the two releases hold different files:\n%v\n%v", first, second)
	}
	arch := runtime.GOARCH
	want := []string{"SHA256SUMS", "SHA256SUMS.minisig", "phtoci_1.2.3-test_" + arch + ".deb", "phtoci_1.2.3-test_linux_" + arch,
		"phtoci_1.2.3-test_linux_" + arch + ".cdx.json", "phtoci_1.2.3-test_linux_" + arch + ".tar.gz"}
	if full {
		want = append(want, "phtoci_1.2.3-test.oci.tar", "phtoci_1.2.3-test.oci.tar.digest")
	}
	for _, w := range want {
		if !strings.Contains(" "+strings.Join(first, " ")+" ", " "+w+" ") {
			t.Errorf("release lacks %s: %v", w, first)
		}
	}
	for _, n := range first {
		a, _ := os.ReadFile(filepath.Join(outs[0], n))
		b, _ := os.ReadFile(filepath.Join(outs[1], n))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same commit (%d and %d bytes)", n, len(a), len(b))
		}
	}
	dist := outs[0]
	run(t, dist, "sha256sum", "--check", "--strict", "SHA256SUMS")

	// The README's check, with Debian's minisign: the signature holds, and
	// a changed SHA256SUMS or a changed artifact fails.
	t.Run("signature", func(t *testing.T) {
		run(t, dist, "minisign", "-V", "-m", "SHA256SUMS", "-p", pubFile)
		for _, n := range first {
			b, _ := os.ReadFile(filepath.Join(dist, n))
			if bytes.Contains(b, encKey) || bytes.Contains(b, []byte("release test password")) {
				t.Errorf("%s holds the signing key or its password", n)
			}
		}
		changed := filepath.Join(t.TempDir(), "dist")
		run(t, dist, "cp", "-a", dist, changed)
		sums, _ := os.ReadFile(filepath.Join(changed, "SHA256SUMS"))
		bad := append([]byte(nil), sums...)
		bad[0] ^= 1 // another hash for the first file
		if err := os.WriteFile(filepath.Join(changed, "SHA256SUMS"), bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("minisign", "-V", "-m", filepath.Join(changed, "SHA256SUMS"), "-p", pubFile).CombinedOutput(); err == nil {
			t.Errorf("minisign accepted a changed SHA256SUMS: %s", out)
		}
		if err := os.WriteFile(filepath.Join(changed, "SHA256SUMS"), sums, 0o644); err != nil {
			t.Fatal(err)
		}
		sbom := filepath.Join(changed, "phtoci_1.2.3-test_linux_"+arch+".cdx.json")
		if err := os.WriteFile(sbom, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS")
		cmd.Dir = changed
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), ".cdx.json: FAILED") {
			t.Errorf("sha256sum --check passed a changed SBOM (%v): %s", err, out)
		}
	})

	t.Run("sbom", func(t *testing.T) {
		bin := filepath.Join(dist, "phtoci_1.2.3-test_linux_"+arch)
		f, err := os.Open(bin + ".cdx.json")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var bom cdx.BOM
		if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(bin)
		sum := sha256.Sum256(b)
		m := bom.Metadata.Component
		if m == nil || m.Name != "phtoci" || m.Version != "1.2.3-test" || m.Hashes == nil || (*m.Hashes)[0].Value != hex.EncodeToString(sum[:]) {
			t.Errorf("SBOM's component is not this binary: %+v", m)
		}
		found := map[string]string{}
		for _, comp := range *bom.Components {
			found[comp.Name] = comp.Version
		}
		gomod, _ := os.ReadFile(filepath.Join(root, "go.mod"))
		for _, mod := range []string{"github.com/urfave/cli/v2", "github.com/google/go-containerregistry", "golang.org/x/crypto/x509roots/fallback"} {
			if found[mod] == "" || !strings.Contains(string(gomod), mod+" "+found[mod]) {
				t.Errorf("SBOM lists %s at %q, go.mod says otherwise", mod, found[mod])
			}
		}
		if want := "go" + strings.TrimPrefix(runtime.Version(), "go"); found["stdlib"] != want {
			t.Errorf("SBOM lists the Go standard library at %q, want %q (this test's toolchain builds the release)", found["stdlib"], want)
		}
		if found["github.com/goreleaser/nfpm/v2"] != "" {
			t.Errorf("the release tool's own dependencies are in the binary's SBOM")
		}
	})

	t.Run("deb", func(t *testing.T) {
		deb := filepath.Join(dist, "phtoci_1.2.3-test_"+arch+".deb")
		if v := run(t, dist, "dpkg-deb", "--field", deb, "Version"); strings.TrimSpace(v) != "1.2.3~test" {
			t.Errorf("deb Version %q", v)
		}
		scratch := filepath.Join(t.TempDir(), "root")
		run(t, dist, "dpkg", "-x", deb, scratch)
		for _, p := range []string{"usr/share/man/man1/phtoci.1.gz", "usr/share/bash-completion/completions/phtoci",
			"usr/share/zsh/vendor-completions/_phtoci", "usr/share/fish/vendor_completions.d/phtoci.fish",
			"usr/lib/systemd/system/phtoci-serve.service", "usr/share/doc/phtoci/serve.yaml", "usr/share/doc/phtoci/copyright"} {
			if _, err := os.Stat(filepath.Join(scratch, p)); err != nil {
				t.Errorf("deb lacks /%s", p)
			}
		}
		// The shipped serve.yaml is the one TestShippedServeConfigStarts
		// (cmd/phtoci) starts; the docs the man page and it point to are here.
		shipped, _ := os.ReadFile(filepath.Join(root, "deploy/serve.yaml"))
		if b, err := os.ReadFile(filepath.Join(scratch, "usr/share/doc/phtoci/serve.yaml")); err != nil || !bytes.Equal(b, shipped) {
			t.Errorf("the .deb's serve.yaml is not deploy/serve.yaml: %v", err)
		}
		for _, p := range []string{"README.md.gz", "serve-config.md", "NEWS.md.gz", "changelog.gz"} {
			if _, err := os.Stat(filepath.Join(scratch, "usr/share/doc/phtoci", p)); err != nil {
				t.Errorf("deb lacks /usr/share/doc/phtoci/%s", p)
			}
		}
		// lintian: clean but for the static binary (Go, CGO_ENABLED=0, by design).
		lint := exec.Command("lintian", "--no-cfg", "--fail-on", "error,warning", "--suppress-tags", "statically-linked-binary", deb)
		if out, err := lint.CombinedOutput(); err != nil || regexp.MustCompile(`(?m)^[EW]: `).Match(out) {
			t.Errorf("lintian: %v\n%s", err, out)
		}
		t.Run("maintainer scripts", func(t *testing.T) { maintainerScripts(t, deb, scratch) })
		if _, err := os.Stat(filepath.Join(scratch, "etc")); !os.IsNotExist(err) {
			t.Errorf("deb installs under /etc (the service must stay disabled, no config is shipped): %v", err)
		}
		z, err := os.Open(filepath.Join(scratch, "usr/share/man/man1/phtoci.1.gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(z)
		if err != nil {
			t.Fatal(err)
		}
		man, _ := io.ReadAll(zr)
		z.Close()
		if !bytes.Contains(man, []byte(".TH phtoci 1")) {
			t.Errorf("man page: %.100s", man)
		}
		bin := filepath.Join(scratch, "usr/bin/phtoci")
		v := run(t, dist, bin, "--version")
		if !strings.HasPrefix(v, "phtoci 1.2.3-test (revision "+c.revision+", ") {
			t.Errorf("installed phtoci --version: %q", v)
		}
		// make demo's first step, with the installed binary.
		work := t.TempDir()
		run(t, work, bin, "keys", "generate", "station-aachen")
		fi, err := os.Stat(filepath.Join(work, "station-aachen.pem"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("station-aachen.pem: %v %v", fi, err)
		}
		pub := run(t, work, bin, "keys", "fingerprint", "station-aachen.pub.pem")
		if !strings.HasPrefix(pub, "SHA256:") {
			t.Errorf("fingerprint of the generated key: %q", pub)
		}
	})
}

// TestImageDigest: the digest file beside an OCI archive names the image
// index that index.json points at, which a registry serves as the image.
func TestImageDigest(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "img.oci.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{
		"oci-layout": `{"imageLayoutVersion":"1.0.0"}`,
		"index.json": `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:` + strings.Repeat("ab", 32) + `","size":1}]}`,
	} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	if err := os.WriteFile(archive, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeImageDigest(archive); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(archive + ".digest")
	if want := "sha256:" + strings.Repeat("ab", 32) + "\n"; string(got) != want {
		t.Errorf("digest file %q, want %q", got, want)
	}
}

// maintainerScripts runs the .deb's scripts on the scratch root it was
// unpacked in (DPKG_ROOT, as dpkg --root does): configure creates the
// phtoci user and group; prerm stops the service (deb-systemd-invoke,
// recorded by a stand-in on PATH: no systemd runs here); purge removes
// /var/lib/phtoci and the user and group.
func maintainerScripts(t *testing.T, deb, root string) {
	ctl := t.TempDir()
	run(t, ctl, "dpkg-deb", "-e", deb, ctl)
	etc := filepath.Join(root, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"passwd": "root:x:0:0:root:/root:/bin/sh\n", "group": "root:x:0:\n",
		"shadow": "root:*:19000:0:99999:7:::\n", "gshadow": "root:*::\n"} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	defer os.RemoveAll(etc)
	stubs := t.TempDir()
	calls := filepath.Join(stubs, "calls")
	if err := os.WriteFile(filepath.Join(stubs, "deb-systemd-invoke"), []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := func(name string, dpkgRoot bool, args ...string) {
		t.Helper()
		cmd := exec.Command("sh", append([]string{"-e", filepath.Join(ctl, name)}, args...)...)
		cmd.Env = []string{"PATH=" + stubs + ":/usr/sbin:/usr/bin:/sbin:/bin"}
		if dpkgRoot {
			cmd.Env = append(cmd.Env, "DPKG_ROOT="+root)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	has := func(file, entry string) bool {
		b, _ := os.ReadFile(filepath.Join(etc, file))
		return strings.Contains("\n"+string(b), "\n"+entry+":")
	}
	script("postinst", true, "configure")
	if !has("passwd", "phtoci") || !has("group", "phtoci") {
		t.Fatal("postinst configure made no phtoci user and group")
	}
	state := filepath.Join(root, "var/lib/phtoci")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(state, "verdicts.db"), []byte("x"), 0o600)
	script("prerm", false, "remove")
	if b, _ := os.ReadFile(calls); strings.TrimSpace(string(b)) != "stop phtoci-serve.service" {
		t.Errorf("prerm remove: deb-systemd-invoke called with %q, want stop phtoci-serve.service", b)
	}
	script("postrm", true, "remove")
	if _, err := os.Stat(state); err != nil || !has("passwd", "phtoci") {
		t.Errorf("postrm remove took the state or the user (only purge does): %v", err)
	}
	script("postrm", true, "purge")
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("postrm purge left /var/lib/phtoci: %v", err)
	}
	if has("passwd", "phtoci") || has("group", "phtoci") {
		t.Error("postrm purge left the phtoci user or group")
	}
}
