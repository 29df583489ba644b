// Command mkimage builds a container image of phtoci itself, without Docker:
// the static binary as /usr/local/bin/phtoci on an empty base, written as an
// OCI archive (make image). The old implementation ships its protocol as a
// container; this is phtoci's equivalent.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
)

func main() {
	bin := flag.String("binary", "bin/phtoci", "the static phtoci binary")
	out := flag.String("o", "bin/phtoci.oci.tar", "output OCI archive")
	tag := flag.String("tag", "latest", "tag recorded in the archive's index")
	flag.Parse()
	if err := run(*bin, *out, *tag); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run(bin, out, tag string) error {
	f, err := os.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	mt := time.Unix(0, 0).UTC()
	if t, ok := layer.SourceDateEpoch(); ok {
		mt = t
	}
	w, err := layer.NewWriter(layer.WriterOptions{ModTime: mt, MediaType: types.OCILayer, Level: 6})
	if err != nil {
		return err
	}
	if err := w.Dir("usr/local/bin"); err != nil {
		w.Abort()
		return err
	}
	if err := w.Executable("usr/local/bin/phtoci", fi.Size(), f); err != nil {
		w.Abort()
		return err
	}
	l, err := w.Close()
	if err != nil {
		return err
	}
	defer l.Cleanup()
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: mt}, CreatedBy: "phtoci make image", Comment: "static phtoci binary"}})
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", runtime.GOARCH, v1.Time{Time: mt}
	cf.Config.Entrypoint = []string{"/usr/local/bin/phtoci"}
	cf.Config.Env = []string{"PATH=/usr/local/bin"}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "phtoci", "org.opencontainers.image.description": "daemonless PHT train protocol"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	ref, err := oci.ParseOutputRef("oci-archive:" + out + ":" + tag)
	if err != nil {
		return err
	}
	d, err := oci.Write(context.Background(), ref, img, oci.Options{})
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s (%s), manifest %s\n", out, ref, d)
	return nil
}
