package oci

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestCheckLayersPerTransport: CheckLayers finds every layer blob without
// reading it in each transport (a HEAD per blob on a real registry, the
// blob's file in a layout, its entry in an oci-archive; a docker-archive's
// entries were found when it was opened), and names the layer of a blob
// that is missing (ErrNotFound) or of another size (ErrCorrupt).
func TestCheckLayersPerTransport(t *testing.T) {
	src := open(t, parse(t, vector("train_initial.oci.tar")), Options{})
	m := testutil.Must1(src.Manifest())(t)
	top := m.Layers[len(m.Layers)-1].Digest
	dir := t.TempDir()
	reg := testreg.Start(t, testreg.Options{})
	o := Options{Transport: reg.Transport()}
	for _, ref := range []Ref{
		parseOut(t, "oci:"+filepath.Join(dir, "layout")),
		parseOut(t, "oci-archive:"+filepath.Join(dir, "x.oci.tar")),
		parseOut(t, "docker-archive:"+filepath.Join(dir, "x.docker.tar")),
		regRef(t, reg, "check/layers:v1"),
	} {
		testutil.Must1(Write(ctx, ref, src, o))(t)
		if err := CheckLayers(ctx, ref, open(t, ref, o), o); err != nil {
			t.Errorf("%s: CheckLayers of a whole image: %v", ref, err)
		}
	}

	// A layout whose top blob is gone, then cut short.
	lay := parseOut(t, "oci:"+filepath.Join(dir, "layout"))
	img := open(t, lay, o)
	blob := filepath.Join(dir, "layout", "blobs", "sha256", top.Hex)
	b := testutil.Must1(os.ReadFile(blob))(t)
	testutil.Must(t, os.Remove(blob))
	if err := CheckLayers(ctx, lay, img, o); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), top.String()) {
		t.Errorf("layout without a blob: %v, want ErrNotFound naming %s", err, top)
	}
	testutil.Must(t, os.WriteFile(blob, b[:len(b)-1], 0o644))
	if err := CheckLayers(ctx, lay, img, o); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), top.String()) {
		t.Errorf("layout with a short blob: %v, want ErrCorrupt naming %s", err, top)
	}

	// An oci-archive without the blob's entry.
	cut := filepath.Join(dir, "cut.oci.tar")
	rewriteTar(t, filepath.Join(dir, "x.oci.tar"), cut, func(n string, b []byte) []byte {
		if strings.HasSuffix(n, top.Hex) {
			return nil
		}
		return b
	})
	if err := CheckLayers(ctx, parse(t, "oci-archive:"+cut), src, o); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), top.String()) {
		t.Errorf("oci-archive without a blob: %v, want ErrNotFound naming %s", err, top)
	}

	// A registry repository that lacks the blobs (HEAD answers 404).
	if err := CheckLayers(ctx, regRef(t, reg, "check/empty:v1"), src, o); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "layer 0") {
		t.Errorf("registry without the blobs: %v, want ErrNotFound naming layer 0", err)
	}
}

// TestCheckLayersCredentialsAsOpen: without Options.Auth or Keychain,
// CheckLayers finds a registry's credentials where Open does (the
// containers auth files first, here ~/.config/containers/auth.json, which
// go-containerregistry's default keychain does not read when a Docker
// config exists).
func TestCheckLayersCredentialsAsOpen(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	ref := regRef(t, reg, "check/auth:v1")
	testutil.Must1(Write(ctx, ref, open(t, parse(t, vector("train_initial.oci.tar")), Options{}), regOpts(reg)))(t)
	home := t.TempDir()
	authFile := filepath.Join(home, ".config", "containers", "auth.json")
	testutil.Must(t, os.MkdirAll(filepath.Dir(authFile), 0o700))
	b := testutil.Must1(json.Marshal(map[string]any{"auths": map[string]any{reg.Host + "/check": map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))}}}))(t)
	testutil.Must(t, os.WriteFile(authFile, b, 0o600))
	t.Setenv("HOME", home)
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	dockerConfig := t.TempDir()
	testutil.Must(t, os.WriteFile(filepath.Join(dockerConfig, "config.json"), []byte(`{"auths":{}}`), 0o600))
	t.Setenv("DOCKER_CONFIG", dockerConfig)
	o := Options{Transport: reg.Transport()}
	img := open(t, ref, o)
	if err := CheckLayers(ctx, ref, img, o); err != nil {
		t.Errorf("CheckLayers with the credentials Open used: %v", err)
	}
}
