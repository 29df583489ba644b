package main

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// writeSBOM writes a CycloneDX (JSON) bill of materials of a Go binary from
// the module graph recorded in it (what go version -m prints): the binary as
// the application, every module linked in as a library with its purl and
// go.sum hash, the Go toolchain and build settings as properties. The
// serial number is derived from the binary's SHA-256, and the time stamp is
// SOURCE_DATE_EPOCH, so the same binary always gets the same SBOM.
func writeSBOM(out, bin string, c config, goos, goarch string, mtime time.Time) error {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	hexSum := hex.EncodeToString(sum[:])
	mainRef := "pkg:golang/" + info.Main.Path + "@v" + c.version + "?goos=" + goos + "&goarch=" + goarch
	props := []cdx.Property{{Name: "go:toolchain", Value: info.GoVersion}, {Name: "go:package", Value: info.Path},
		{Name: "vcs:revision", Value: c.revision}}
	for _, s := range info.Settings {
		props = append(props, cdx.Property{Name: "go:build:" + s.Key, Value: s.Value})
	}
	main := cdx.Component{
		BOMRef: mainRef, Type: cdx.ComponentTypeApplication, Name: "phtoci", Version: c.version,
		Description:        "daemonless PHT train protocol on container images",
		PackageURL:         mainRef,
		Hashes:             &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: hexSum}},
		Licenses:           &cdx.Licenses{{License: &cdx.License{ID: "MIT"}}},
		ExternalReferences: &[]cdx.ExternalReference{{Type: cdx.ERTypeVCS, URL: "https://github.com/phtoci/phtoci"}},
		Properties:         &props,
	}
	var comps []cdx.Component
	var refs []string
	deps := append([]*debug.Module(nil), info.Deps...)
	sort.Slice(deps, func(i, j int) bool { return deps[i].Path < deps[j].Path })
	for _, d := range deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		ref := "pkg:golang/" + m.Path + "@" + m.Version
		comp := cdx.Component{BOMRef: ref, Type: cdx.ComponentTypeLibrary, Name: m.Path, Version: m.Version, PackageURL: ref, Scope: cdx.ScopeRequired}
		if m.Sum != "" {
			comp.Properties = &[]cdx.Property{{Name: "go:sum", Value: m.Sum}}
		}
		if d.Replace != nil {
			comp.Pedigree = &cdx.Pedigree{Notes: "replaces " + d.Path + "@" + d.Version}
		}
		comps = append(comps, comp)
		refs = append(refs, ref)
	}
	// The Go standard library is linked in too, and has its own CVEs:
	// scanners (grype, trivy, govulncheck's SBOM mode) match them on this
	// component, named as syft names it.
	if gov := strings.TrimPrefix(strings.Fields(info.GoVersion + " ")[0], "go"); gov != "" {
		ref := "pkg:golang/stdlib@" + gov
		comps = append(comps, cdx.Component{BOMRef: ref, Type: cdx.ComponentTypeLibrary, Name: "stdlib", Version: "go" + gov,
			PackageURL: ref, Scope: cdx.ScopeRequired, Description: "the Go standard library of the toolchain that built the binary"})
		refs = append(refs, ref)
	}
	bom := cdx.NewBOM()
	// A name-based (version 5 form) UUID of the binary's hash.
	u := sha256.Sum256([]byte("phtoci-sbom:" + hexSum))
	u[6], u[8] = (u[6]&0x0f)|0x50, (u[8]&0x3f)|0x80
	bom.SerialNumber = fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	bom.Metadata = &cdx.Metadata{
		Timestamp: mtime.Format(time.RFC3339),
		Component: &main,
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{Type: cdx.ComponentTypeApplication, Name: "phtoci tools/release",
			Description: "debug/buildinfo of the binary, encoded with github.com/CycloneDX/cyclonedx-go"}}},
		Properties: &[]cdx.Property{{Name: "go:goos", Value: goos}, {Name: "go:goarch", Value: goarch}},
	}
	bom.Components = &comps
	bom.Dependencies = &[]cdx.Dependency{{Ref: mainRef, Dependencies: &refs}}
	var buf bytes.Buffer
	if err := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON).SetPretty(true).Encode(bom); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}
