package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

type config struct {
	root, out         string
	version, revision string
	epoch             int64
	platforms         []string
	image             bool
	// signKey (a minisign private key file) and signPassword (a file with
	// its password) sign SHA256SUMS; empty: unsigned.
	signKey, signPassword string
}

// extras are the files made from the command tree by running phtoci
// (man page, completions), shared by every platform's archive and .deb.
type extras struct {
	man                   []byte // roff, not compressed
	bash, zsh, fish       []byte
	license, readme, news []byte
	unit, serveYAML, sysu []byte
	serveRef              []byte // the serve config reference
}

func release(c config) error {
	root, err := filepath.Abs(c.root)
	if err != nil {
		return err
	}
	c.root = root
	out, err := filepath.Abs(c.out)
	if err != nil {
		return err
	}
	// Everything is made in a directory beside the output and renamed over
	// it at the end: a failed release leaves the previous one.
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(out), ".release-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	bins := map[string]string{} // platform -> binary in work
	for _, p := range c.platforms {
		goos, goarch, ok := strings.Cut(p, "/")
		if !ok {
			return fmt.Errorf("platform %q: want OS/ARCH", p)
		}
		bin := filepath.Join(work, fmt.Sprintf("phtoci_%s_%s_%s", c.version, goos, goarch))
		if err := goBuild(c, goos, goarch, bin); err != nil {
			return err
		}
		bins[p] = bin
	}
	host, ok := bins[runtime.GOOS+"/"+runtime.GOARCH]
	if !ok {
		host = filepath.Join(work, ".phtoci-host")
		if err := goBuild(c, runtime.GOOS, runtime.GOARCH, host); err != nil {
			return err
		}
		defer os.Remove(host)
	}
	x, err := makeExtras(c, host)
	if err != nil {
		return err
	}
	mtime := time.Unix(c.epoch, 0).UTC()
	for _, p := range c.platforms {
		goos, goarch, _ := strings.Cut(p, "/")
		bin := bins[p]
		if err := writeArchive(bin+".tar.gz", filepath.Base(bin), bin, x, mtime); err != nil {
			return fmt.Errorf("%s archive: %w", p, err)
		}
		if err := writeSBOM(bin+".cdx.json", bin, c, goos, goarch, mtime); err != nil {
			return fmt.Errorf("%s SBOM: %w", p, err)
		}
		if goos == "linux" {
			deb := filepath.Join(work, fmt.Sprintf("phtoci_%s_%s.deb", c.version, goarch))
			if err := writeDeb(deb, bin, goarch, c, x, mtime); err != nil {
				return fmt.Errorf("%s .deb: %w", p, err)
			}
		}
	}
	if c.image {
		args := []string{"run", "./internal/mkimage", "-o", filepath.Join(work, fmt.Sprintf("phtoci_%s.oci.tar", c.version)),
			"-tag", c.version, "-version", c.version, "-revision", c.revision}
		for _, p := range c.platforms {
			if strings.HasPrefix(p, "linux/") {
				args = append(args, "-binary", p+"="+bins[p])
			}
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = c.root
		cmd.Env = append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", c.epoch), "GOFLAGS=-buildvcs=false")
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("container image: %v\n%s", err, o)
		}
		if err := writeImageDigest(filepath.Join(work, fmt.Sprintf("phtoci_%s.oci.tar", c.version))); err != nil {
			return fmt.Errorf("container image: %w", err)
		}
	}
	if err := writeSums(work); err != nil {
		return err
	}
	if c.signKey != "" {
		if err := signSums(work, c.signKey, c.signPassword, "phtoci "+c.version+" "+c.revision); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.Rename(work, out); err != nil {
		return err
	}
	return nil
}

// goBuild makes a static, reproducible binary: no paths of this machine
// (-trimpath), no build id, no VCS stamp (the version and commit are
// linked in instead, so a source tree without .git builds the same bytes).
func goBuild(c config, goos, goarch, out string) error {
	ldflags := fmt.Sprintf("-s -w -buildid= -X main.version=%s -X main.revision=%s", c.version, c.revision)
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, "./cmd/phtoci")
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=", fmt.Sprintf("SOURCE_DATE_EPOCH=%d", c.epoch))
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s/%s: %v\n%s", goos, goarch, err, o)
	}
	return nil
}

func makeExtras(c config, host string) (extras, error) {
	var x extras
	run := func(args ...string) ([]byte, error) {
		cmd := exec.Command(host, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("phtoci %s: %v: %s", strings.Join(args, " "), err, se.String())
		}
		return so.Bytes(), nil
	}
	var err error
	for _, s := range []struct {
		dst  *[]byte
		args []string
	}{{&x.man, []string{"man"}}, {&x.bash, []string{"completion", "bash"}}, {&x.zsh, []string{"completion", "zsh"}}, {&x.fish, []string{"completion", "fish"}}} {
		if *s.dst, err = run(s.args...); err != nil {
			return x, err
		}
	}
	for _, f := range []struct {
		dst  *[]byte
		name string
	}{{&x.license, "LICENSE"}, {&x.readme, "README.md"}, {&x.news, "CHANGELOG.md"},
		{&x.unit, "deploy/phtoci-serve.service"}, {&x.serveYAML, "deploy/serve.yaml"}, {&x.sysu, "deploy/sysusers.conf"},
		{&x.serveRef, "deploy/serve-config.md"}} {
		if *f.dst, err = os.ReadFile(filepath.Join(c.root, f.name)); err != nil {
			return x, err
		}
	}
	return x, nil
}

// gz compresses b reproducibly (no name, no time in the header).
func gz(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// writeArchive writes DIR/phtoci, the man page, completions and docs as a
// tar.gz with fixed times, owners and order.
func writeArchive(out, dir, bin string, x extras, mtime time.Time) error {
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"phtoci", 0o755, b},
		{"LICENSE", 0o644, x.license},
		{"README.md", 0o644, x.readme},
		{"CHANGELOG.md", 0o644, x.news},
		{"man/phtoci.1", 0o644, x.man},
		{"completions/phtoci.bash", 0o644, x.bash},
		{"completions/_phtoci", 0o644, x.zsh},
		{"completions/phtoci.fish", 0o644, x.fish},
		{"deploy/phtoci-serve.service", 0o644, x.unit},
		{"deploy/serve.yaml", 0o644, x.serveYAML},
		{"deploy/serve-config.md", 0o644, x.serveRef},
	}
	dirs := map[string]bool{}
	hdr := func(name string, typ byte, mode int64, size int64) *tar.Header {
		return &tar.Header{Name: dir + "/" + name, Typeflag: typ, Mode: mode, Size: size, ModTime: mtime, Uname: "root", Gname: "root", Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr("", tar.TypeDir, 0o755, 0)); err != nil {
		return err
	}
	for _, f := range files {
		if d := filepath.Dir(f.name); d != "." && !dirs[d] {
			dirs[d] = true
			if err := tw.WriteHeader(hdr(d+"/", tar.TypeDir, 0o755, 0)); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(hdr(f.name, tar.TypeReg, f.mode, int64(len(f.data)))); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// writeSums writes SHA256SUMS for every file in dir, in sha256sum -c form.
func writeSums(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(&sb, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), n)
	}
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sb.String()), 0o644)
}

// writeImageDigest writes ARCHIVE.digest beside an OCI archive: the digest
// of the image index it holds, the digest a registry serves for the image
// once it is copied there (skopeo copy keeps the index as it is). It is
// listed in SHA256SUMS and so covered by the release signature: a pulled
// image is checked against it without the archive.
func writeImageDigest(archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("%s: no index.json: %w", archive, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Digest string `json:"digest"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&idx); err != nil {
			return fmt.Errorf("%s: index.json: %w", archive, err)
		}
		if len(idx.Manifests) != 1 {
			return fmt.Errorf("%s: index.json lists %d images, want 1", archive, len(idx.Manifests))
		}
		return os.WriteFile(archive+".digest", []byte(idx.Manifests[0].Digest+"\n"), 0o644)
	}
}
