// Command release builds phtoci's release artifacts, offline and
// reproducibly (make release): for each platform a static binary
// (-trimpath, no build id, CGO_ENABLED=0, version and commit linked in), a
// tar.gz archive (binary, man page, completions, docs), a CycloneDX SBOM made
// from the binary's Go module graph (debug/buildinfo), a .deb (nfpm, linux
// only), then the container image (internal/mkimage) and SHA256SUMS. Every
// time stamp is SOURCE_DATE_EPOCH (the last commit's time), so two builds
// of one commit give the same bytes.
//
// It is its own module so that nfpm and cyclonedx-go stay out of phtoci's
// go.mod; both come from the Go module proxy like phtoci's dependencies.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	var c config
	var plats string
	flag.StringVar(&c.root, "root", "../..", "the phtoci source tree")
	flag.StringVar(&c.out, "o", "dist", "output directory (replaced)")
	flag.StringVar(&c.version, "version", "", "version, as phtoci --version prints it (the tag without v, or 0.0.0-<commit>)")
	flag.StringVar(&c.revision, "revision", "", "the commit being built")
	flag.Int64Var(&c.epoch, "epoch", -1, "SOURCE_DATE_EPOCH: the last commit's time, used for every time stamp")
	flag.StringVar(&plats, "platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH list")
	flag.BoolVar(&c.image, "image", true, "also build the container image of the linux platforms")
	flag.StringVar(&c.signKey, "sign-key", "", "minisign private key that signs SHA256SUMS (read, never copied)")
	flag.StringVar(&c.signPassword, "sign-password-file", "", "file holding the signing key's password")
	flag.Parse()
	c.platforms = strings.Split(plats, ",")
	if c.version == "" || c.revision == "" || c.epoch < 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "release: -version, -revision and -epoch are required (make release sets them from git)")
		os.Exit(2)
	}
	if err := release(c); err != nil {
		fmt.Fprintf(os.Stderr, "release: %v\n", err)
		os.Exit(1)
	}
}
