// Command mkimage builds the container image of phtoci itself, without
// Docker (make image, make release): for each platform the static binary as
// /usr/local/bin/phtoci, /tmp (1777) for spool files, a non-root user
// (uid and gid 65532, with /etc/passwd and /etc/group entries) owning the
// working directory /work, its state directory StateDir (0700, a declared
// volume: the station ledger and the layer summary cache, PHTOCI_LEDGER
// and PHTOCI_CACHE point there), and OCI labels naming source, version
// and revision. The images go into one index, written as an OCI archive that
// podman load, docker load and skopeo read. The old implementation ships its
// protocol as a container; this is phtoci's equivalent. Trusted roots are
// compiled into the binary (golang.org/x/crypto/x509roots/fallback), so the
// image holds no other files.
package main

import (
	"archive/tar"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/fsutil"
)

// StateDir is the image's one state directory, a volume: the station
// ledger (a station signs a train once only while it keeps its ledger)
// and the layer summary cache. Mount it to keep them across containers.
const StateDir = "/var/lib/phtoci"

// The image's user: 65532 is the "nonroot" id of distroless images, which
// no host account usually has.
const (
	uid      = 65532
	userName = "phtoci"
)

type options struct {
	binaries map[string]string // platform (linux/amd64) -> static binary
	out      string            // OCI archive to write
	tag      string
	version  string
	revision string
	source   string
	created  time.Time
}

type binaryFlag map[string]string

func (b binaryFlag) String() string { return fmt.Sprint(map[string]string(b)) }

// Set takes OS/ARCH=FILE; a bare FILE is the linux binary for this machine's
// architecture.
func (b binaryFlag) Set(s string) error {
	plat, file, ok := strings.Cut(s, "=")
	if !ok {
		plat, file = "linux/"+hostArch(), s
	}
	if _, err := v1.ParsePlatform(plat); err != nil || !strings.Contains(plat, "/") {
		return fmt.Errorf("--binary %q: want OS/ARCH=FILE", s)
	}
	b[plat] = file
	return nil
}

func main() {
	o := options{binaries: map[string]string{}}
	flag.Var(binaryFlag(o.binaries), "binary", "a static phtoci binary: OS/ARCH=FILE, repeated per platform (a bare FILE is linux on this architecture)")
	flag.StringVar(&o.out, "o", "bin/phtoci.oci.tar", "output OCI archive")
	flag.StringVar(&o.tag, "tag", "latest", "tag recorded in the archive's index")
	flag.StringVar(&o.version, "version", "", "org.opencontainers.image.version label")
	flag.StringVar(&o.revision, "revision", "", "org.opencontainers.image.revision label (the commit)")
	flag.StringVar(&o.source, "source", "https://github.com/phtoci/phtoci", "org.opencontainers.image.source label")
	flag.Parse()
	if len(o.binaries) == 0 {
		o.binaries["linux/"+hostArch()] = "bin/phtoci"
	}
	o.created = time.Unix(0, 0).UTC()
	if t, ok := fsutil.SourceDateEpoch(); ok {
		o.created = t
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	var plats []string
	for p := range o.binaries {
		plats = append(plats, p)
	}
	sort.Strings(plats)
	tmp, err := os.MkdirTemp(filepath.Dir(o.out), ".mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, plat := range plats {
		p, _ := v1.ParsePlatform(plat)
		img, err := image(o, *p, o.binaries[plat], filepath.Join(tmp, strings.ReplaceAll(plat, "/", "-")+".tar"))
		if err != nil {
			return fmt.Errorf("%s image from %s: %w", plat, o.binaries[plat], err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	dir := filepath.Join(tmp, "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": o.tag})); err != nil {
		return err
	}
	if err := tarDir(dir, o.out, o.created); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s (oci-archive:%s:%s), index %s for %s\n", o.out, o.out, o.tag, d, strings.Join(plats, ", "))
	return nil
}

// image is one platform's image: a single layer with the whole file system.
func image(o options, p v1.Platform, bin, layerFile string) (v1.Image, error) {
	if err := rootfs(bin, layerFile, o.created); err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromFile(layerFile, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: o.created}, CreatedBy: "phtoci make image", Comment: "static phtoci binary, /tmp, user " + userName}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.Created = p.OS, p.Architecture, p.Variant, v1.Time{Time: o.created}
	cf.Config.Entrypoint = []string{"/usr/local/bin/phtoci"}
	cf.Config.Env = []string{"PATH=/usr/local/bin", "TMPDIR=/tmp",
		"PHTOCI_LEDGER=" + StateDir + "/ledger.jsonl", "PHTOCI_CACHE=" + StateDir + "/cache"}
	cf.Config.Volumes = map[string]struct{}{StateDir: {}}
	cf.Config.User = fmt.Sprintf("%d:%d", uid, uid)
	cf.Config.WorkingDir = "/work"
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "phtoci",
		"org.opencontainers.image.description": "daemonless PHT train protocol",
		"org.opencontainers.image.licenses":    "MIT",
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.created":     o.created.Format(time.RFC3339),
	}
	if o.version != "" {
		cf.Config.Labels["org.opencontainers.image.version"] = o.version
	}
	if o.revision != "" {
		cf.Config.Labels["org.opencontainers.image.revision"] = o.revision
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs writes the image's file system as a tar to out.
func rootfs(bin, out string, mt time.Time) error {
	f, err := os.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	defer w.Close()
	tw := tar.NewWriter(w)
	hdr := func(name string, typ byte, mode int64, owner int, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: mode, Uid: owner, Gid: owner, Size: size, ModTime: mt, Format: tar.FormatPAX}
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:/work:/sbin/nologin\n", userName, uid, uid, userName)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", userName, uid)
	for _, e := range []struct {
		h    *tar.Header
		body io.Reader
	}{
		{hdr("etc/", tar.TypeDir, 0o755, 0, 0), nil},
		{hdr("etc/group", tar.TypeReg, 0o644, 0, int64(len(group))), strings.NewReader(group)},
		{hdr("etc/passwd", tar.TypeReg, 0o644, 0, int64(len(passwd))), strings.NewReader(passwd)},
		{hdr("tmp/", tar.TypeDir, 0o1777, 0, 0), nil},
		{hdr("usr/", tar.TypeDir, 0o755, 0, 0), nil},
		{hdr("usr/local/", tar.TypeDir, 0o755, 0, 0), nil},
		{hdr("usr/local/bin/", tar.TypeDir, 0o755, 0, 0), nil},
		{hdr("usr/local/bin/phtoci", tar.TypeReg, 0o755, 0, fi.Size()), f},
		{hdr("var/", tar.TypeDir, 0o755, 0, 0), nil},
		{hdr("var/lib/", tar.TypeDir, 0o755, 0, 0), nil},
		{hdr(strings.TrimPrefix(StateDir, "/")+"/", tar.TypeDir, 0o700, uid, 0), nil},
		{hdr("work/", tar.TypeDir, 0o755, uid, 0), nil},
	} {
		if err := tw.WriteHeader(e.h); err != nil {
			return err
		}
		if e.body != nil {
			if n, err := io.Copy(tw, e.body); err != nil || n != e.h.Size {
				return fmt.Errorf("writing %s: %d of %d bytes: %v", e.h.Name, n, e.h.Size, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return w.Close()
}

// tarDir packs an OCI layout directory as an OCI archive, reproducibly
// (sorted names, fixed times and owners), through a temporary file renamed
// over out.
func tarDir(dir, out string, mt time.Time) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		names = append(names, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	return fsutil.WriteAtomic(out, 0o644, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, p := range names {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: mt, Typeflag: tar.TypeReg, Size: fi.Size(), Format: tar.FormatPAX}
			if fi.IsDir() {
				h.Name, h.Mode, h.Typeflag, h.Size = h.Name+"/", 0o755, tar.TypeDir, 0
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if !fi.IsDir() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				_, err = io.Copy(tw, f)
				f.Close()
				if err != nil {
					return err
				}
			}
		}
		return tw.Close()
	})
}

func hostArch() string { return runtime.GOARCH }
