package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

const postinst = `#!/bin/sh
# Creates the system user of phtoci serve (deploy/sysusers.conf). The
# service stays disabled until the administrator enables it.
set -e
if [ "$1" = configure ] && command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers phtoci.conf || true
fi
`

// writeDeb packages one linux binary with nfpm: /usr/bin/phtoci, the man
// page, bash/zsh/fish completions, a systemd unit for phtoci serve (not
// enabled), its system user and an example serve.yaml.
func writeDeb(out, bin, arch string, c config, x extras, mtime time.Time) error {
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".deb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		if err == nil {
			err = os.WriteFile(p, b, 0o644)
		}
		return p
	}
	type file struct {
		src, dst string
		mode     os.FileMode
	}
	list := []file{
		{bin, "/usr/bin/phtoci", 0o755},
		{write("phtoci.1.gz", gz(x.man)), "/usr/share/man/man1/phtoci.1.gz", 0o644},
		{write("bash", x.bash), "/usr/share/bash-completion/completions/phtoci", 0o644},
		{write("zsh", x.zsh), "/usr/share/zsh/vendor-completions/_phtoci", 0o644},
		{write("fish", x.fish), "/usr/share/fish/vendor_completions.d/phtoci.fish", 0o644},
		{write("unit", x.unit), "/usr/lib/systemd/system/phtoci-serve.service", 0o644},
		{write("sysusers", x.sysu), "/usr/lib/sysusers.d/phtoci.conf", 0o644},
		{write("serve.yaml", x.serveYAML), "/usr/share/doc/phtoci/serve.yaml", 0o644},
		{write("copyright", x.license), "/usr/share/doc/phtoci/copyright", 0o644},
		{write("changelog.gz", gz(x.news)), "/usr/share/doc/phtoci/changelog.gz", 0o644},
	}
	post := write("postinst", []byte(postinst))
	if err != nil {
		return err
	}
	var contents files.Contents
	for _, f := range list {
		contents = append(contents, &files.Content{Source: f.src, Destination: f.dst, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Mode: f.mode, MTime: mtime, Owner: "root", Group: "root"}})
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:        "phtoci",
		Arch:        arch,
		Platform:    "linux",
		Version:     c.version,
		Section:     "utils",
		Priority:    "optional",
		Maintainer:  "The phtoci authors <security@phtoci.invalid>",
		Description: "Personal Health Train protocol on container images, without a Docker daemon\nverifies, decrypts, signs and re-encrypts PHT trains in registries, image tarballs and OCI layouts",
		Vendor:      "The phtoci authors",
		Homepage:    "https://github.com/phtoci/phtoci",
		License:     "MIT",
		MTime:       mtime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts:  nfpm.Scripts{PostInstall: post},
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return err
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := pkg.Package(info, &buf); err != nil {
		return fmt.Errorf("nfpm: %w", err)
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}
