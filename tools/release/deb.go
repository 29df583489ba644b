package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
  systemd-sysusers --root="${DPKG_ROOT:-/}" phtoci.conf || true
fi
`

// prerm stops phtoci serve before its binary goes (remove, or the old
// version's on upgrade; the new one is not started: the administrator
// enabled it, so it runs again at the next start or systemctl start).
const prerm = `#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && command -v deb-systemd-invoke >/dev/null 2>&1; then
  deb-systemd-invoke stop phtoci-serve.service >/dev/null || true
fi
`

// postrm: on purge, the service's enablement links, its state
// (/var/lib/phtoci: the verdict store) and its system user and group go.
// /etc/phtoci is the administrator's and stays.
const postrm = `#!/bin/sh
set -e
if [ "$1" = purge ]; then
  if [ -z "${DPKG_ROOT:-}" ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper purge phtoci-serve.service >/dev/null || true
  fi
  rm -rf "${DPKG_ROOT:-}/var/lib/phtoci"
  # Gone already (removed by hand) is fine.
  userdel --root "${DPKG_ROOT:-/}" phtoci >/dev/null 2>&1 || true
  groupdel --root "${DPKG_ROOT:-/}" phtoci >/dev/null 2>&1 || true
fi
`

// description is the package's synopsis and extended description (lines
// of at most 80 characters).
const description = `Personal Health Train protocol on container images, without a Docker daemon
phtoci verifies, decrypts, signs and re-encrypts PHT trains in registries,
image tarballs and OCI layouts. phtoci serve verifies every train pushed to
a registry (Harbor or distribution webhooks) and serves the verdicts.`

// debianChangelog is changelog.gz: a Debian changelog entry for this
// version (the package is native), pointing to the project's changes.
func debianChangelog(version string, mtime time.Time) []byte {
	return []byte(fmt.Sprintf("phtoci (%s) unstable; urgency=medium\n\n"+
		"  * Release %s. The changes are in /usr/share/doc/phtoci/NEWS.md.gz.\n\n"+
		" -- The phtoci authors <security@phtoci.invalid>  %s\n", debVersion(version), version, mtime.UTC().Format(time.RFC1123Z)))
}

// debVersion is nfpm's Debian form of a version: a pre-release sorts
// before its release (1.2.3-rc1 → 1.2.3~rc1).
func debVersion(v string) string { return strings.Replace(v, "-", "~", 1) }

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
		{write("serve-config.md", x.serveRef), "/usr/share/doc/phtoci/serve-config.md", 0o644},
		{write("README.md.gz", gz(x.readme)), "/usr/share/doc/phtoci/README.md.gz", 0o644},
		{write("NEWS.md.gz", gz(x.news)), "/usr/share/doc/phtoci/NEWS.md.gz", 0o644},
		{write("copyright", x.license), "/usr/share/doc/phtoci/copyright", 0o644},
		{write("changelog.gz", gz(debianChangelog(c.version, mtime))), "/usr/share/doc/phtoci/changelog.gz", 0o644},
	}
	post := write("postinst", []byte(postinst))
	pre := write("prerm", []byte(prerm))
	postRm := write("postrm", []byte(postrm))
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
		Description: description,
		Vendor:      "The phtoci authors",
		Homepage:    "https://github.com/phtoci/phtoci",
		License:     "MIT",
		MTime:       mtime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts:  nfpm.Scripts{PostInstall: post, PreRemove: pre, PostRemove: postRm},
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
