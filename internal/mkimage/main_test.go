package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestImageIsStandard builds the image from a stand-in binary and has the
// real skopeo and umoci read it.
func TestImageIsStandard(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "phtoci")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho phtoci\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "phtoci.oci.tar")
	if err := run(bin, out, "latest"); err != nil {
		t.Fatal(err)
	}
	raw, err := exec.Command("skopeo", "inspect", "--config", "oci-archive:"+out+":latest").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, raw)
	}
	var cfg struct {
		Config struct{ Entrypoint []string } `json:"config"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/local/bin/phtoci" {
		t.Fatalf("entrypoint %v (%v)", cfg.Config.Entrypoint, err)
	}
	layout := filepath.Join(dir, "layout")
	if o, err := exec.Command("skopeo", "copy", "-q", "oci-archive:"+out+":latest", "oci:"+layout+":latest").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, o)
	}
	bundle := filepath.Join(dir, "bundle")
	if o, err := exec.Command("umoci", "unpack", "--rootless", "--image", layout+":latest", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, o)
	}
	fi, err := os.Stat(filepath.Join(bundle, "rootfs", "usr", "local", "bin", "phtoci"))
	if err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("unpacked binary: %v %v", err, fi)
	}
}
