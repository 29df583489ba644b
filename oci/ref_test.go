package oci

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
)

// TestParseRefForms: every accepted input form parses to the transport,
// path, tag and registry name it means, and String gives a form that parses
// back to the same Ref.
func TestParseRefForms(t *testing.T) {
	dir := t.TempDir()
	layoutDir := filepath.Join(dir, "layout")
	testutil.Must1(Write(ctx, kindRef("oci", layoutDir, ""), open(t, parse(t, vector("train_initial.oci.tar")), Options{}), Options{}))(t)
	both := filepath.Join(dir, "both.tar")
	dockerPlusLayout(t, vector("train_initial.docker.tar"), vector("train_initial.oci.tar"), both)
	// A Docker 25+ style save (both layouts) reads as its OCI manifest, verbatim.
	if got, want := digest(t, open(t, parse(t, both), Options{})), digest(t, open(t, parse(t, vector("train_initial.oci.tar")), Options{})); got != want {
		t.Errorf("docker save with an OCI layout read as %s, want its index.json manifest %s", got, want)
	}

	cases := []struct {
		in        string
		transport string
		path, tag string
		name      string
	}{
		{"registry.example/project/train:tag", "docker", "", "", "registry.example/project/train:tag"},
		{"docker://registry.example/project/train:tag", "docker", "", "", "registry.example/project/train:tag"},
		{"127.0.0.1:5000/pht/train@sha256:" + strings.Repeat("a", 64), "docker", "", "", "127.0.0.1:5000/pht/train@sha256:" + strings.Repeat("a", 64)},
		{"alpine:3.20", "docker", "", "", "alpine:3.20"},
		{"docker-archive:" + vector("train_initial.docker.tar"), "docker-archive", vector("train_initial.docker.tar"), "", ""},
		{"docker-archive:x.tar:localhost:5000/a/b:v1", "docker-archive", "x.tar", "localhost:5000/a/b:v1", ""},
		{vector("train_initial.docker.tar"), "docker-archive", vector("train_initial.docker.tar"), "", ""},
		{vector("train_initial.oci.tar"), "oci-archive", vector("train_initial.oci.tar"), "", ""},
		{both, "oci-archive", both, "", ""},
		{"oci-archive:" + vector("train_initial.oci.tar"), "oci-archive", vector("train_initial.oci.tar"), "", ""},
		{"oci-archive:bin/x.oci.tar:v2", "oci-archive", "bin/x.oci.tar", "v2", ""},
		{"oci:" + layoutDir, "oci", layoutDir, "", ""},
		{"oci:" + layoutDir + ":latest", "oci", layoutDir, "latest", ""},
		{layoutDir, "oci", layoutDir, "", ""},
	}
	for _, c := range cases {
		r, err := ParseRef(c.in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", c.in, err)
			continue
		}
		if kind, path, tag := refParts(r); kind != c.transport || path != c.path || tag != c.tag {
			t.Errorf("ParseRef(%q) = %s %q %q, want %s %q %q", c.in, kind, path, tag, c.transport, c.path, c.tag)
		}
		if c.name != "" && (r.Name() == nil || r.Name().String() != c.name) {
			t.Errorf("ParseRef(%q).Name() = %v, want %s", c.in, r.Name(), c.name)
		}
		if (r.Name() != nil) != (c.transport == "docker") {
			t.Errorf("ParseRef(%q).Name() = %v for transport %s", c.in, r.Name(), c.transport)
		}
		back, err := ParseRef(r.String())
		if bk, _, _ := refParts(back); err != nil || back.String() != r.String() || bk != c.transport {
			t.Errorf("ParseRef(%q).String() = %q does not parse back: %v %v", c.in, r.String(), back, err)
		}
	}
}

// TestParseRefErrors: unknown transports, missing files, a tar that is no
// image, a directory without oci-layout and a path that is also a registry
// reference give the right sentinel and list the accepted forms.
func TestParseRefErrors(t *testing.T) {
	dir := t.TempDir()
	plainTar := filepath.Join(dir, "plain.tar")
	writeTar(t, plainTar, map[string]string{"hello.txt": "hi"})
	notTar := filepath.Join(dir, "junk")
	testutil.Must(t, os.WriteFile(notTar, []byte("this is not a tar archive, not at all, just text\n"), 0o644))
	emptyDir := filepath.Join(dir, "empty")
	testutil.Must(t, os.Mkdir(emptyDir, 0o755))
	// A directory whose name is also a registry reference.
	t.Chdir(dir)
	testutil.Must(t, os.MkdirAll("reg.example/pht/plain", 0o755))
	testutil.Must1(Write(ctx, kindRef("oci", "reg.example/pht/train", ""), open(t, parse(t, vector("train_initial.oci.tar")), Options{}), Options{}))(t)
	if r, err := ParseRef("reg.example/pht/plain"); err != nil || r.Name() == nil {
		t.Errorf("ParseRef of a registry reference that is also a directory holding no image = %v, %v; want the registry", r, err)
	}

	cases := []struct {
		in   string
		want error
	}{
		{"ftp://example.com/x.tar", ErrUnknownTransport},
		{"containers-storage:foo", ErrUnknownTransport},
		{"oci-arch:train.tar", ErrUnknownTransport},
		{"", ErrUnknownTransport},
		{"docker-archive:", ErrUnknownTransport},
		{filepath.Join(dir, "missing.tar"), ErrNotFound},
		{"./missing-dir", ErrNotFound},
		{"missing.tar", ErrNotFound},
		{plainTar, ErrUnknownTransport},
		{notTar, ErrCorrupt},
		{emptyDir, ErrUnknownTransport},
		{"reg.example/pht/train", ErrAmbiguous},
		{"UPPER/Case:tag", ErrUnknownTransport},
	}
	for _, c := range cases {
		r, err := ParseRef(c.in)
		if !errors.Is(err, c.want) {
			t.Errorf("ParseRef(%q) = %v, %v; want %v", c.in, r, err, c.want)
			continue
		}
		if c.in == "UPPER/Case:tag" {
			// Issue 28: said plainly, with the reference it could be.
			if !strings.Contains(err.Error(), "repository names are lower-case (upper/case:tag would be one)") {
				t.Errorf("ParseRef(%q) error does not say repository names are lower-case: %v", c.in, err)
			}
			continue
		}
		if c.want != ErrCorrupt && !strings.Contains(err.Error(), "accepted forms") {
			t.Errorf("ParseRef(%q) error does not list the accepted forms: %v", c.in, err)
		}
	}
}

// TestParseOutputRef: outputs that do not exist yet are decided by prefix,
// extension and shape; existing images by content.
func TestParseOutputRef(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		in        string
		transport string
		path, tag string
	}{
		{filepath.Join(dir, "new.tar"), "docker-archive", filepath.Join(dir, "new.tar"), ""},
		{"oci-archive:" + filepath.Join(dir, "new.tar") + ":v1", "oci-archive", filepath.Join(dir, "new.tar"), "v1"},
		{filepath.Join(dir, "newdir"), "oci", filepath.Join(dir, "newdir"), ""},
		{filepath.Join(dir, "newdir") + "/", "oci", filepath.Join(dir, "newdir"), ""},
		{"oci:" + filepath.Join(dir, "newdir") + ":t", "oci", filepath.Join(dir, "newdir"), "t"},
		{vector("train_initial.oci.tar"), "oci-archive", vector("train_initial.oci.tar"), ""},
		{"127.0.0.1:5000/pht/train:out", "docker", "", ""},
	}
	for _, c := range cases {
		r, err := ParseOutputRef(c.in)
		if err != nil {
			t.Errorf("ParseOutputRef(%q): %v", c.in, err)
			continue
		}
		if kind, path, tag := refParts(r); kind != c.transport || path != c.path || tag != c.tag {
			t.Errorf("ParseOutputRef(%q) = %s %q %q, want %s %q %q", c.in, kind, path, tag, c.transport, c.path, c.tag)
		}
	}
	if _, err := ParseOutputRef("nfs:/x"); !errors.Is(err, ErrUnknownTransport) {
		t.Errorf("ParseOutputRef(nfs:/x) = %v, want ErrUnknownTransport", err)
	}
}

// TestDefaultOutput: registry → same repo with TAG-suffix (suffix without a
// tag); file → F-suffix.tar beside it; layout → same dir with TAG-suffix.
// WriteBack is the registry reference itself, else the same; PrivateOutput
// never a registry: REPOSITORY_TAG.suffix.oci.tar in the current directory,
// and for an archive F-suffix.tar in the current directory, not beside it.
func TestDefaultOutput(t *testing.T) {
	digestRef := "reg.example/pht/train@sha256:" + strings.Repeat("b", 64)
	cases := []struct{ in, want, back, private string }{
		{"reg.example/pht/train:v1", "docker://reg.example/pht/train:v1-decrypted", "docker://reg.example/pht/train:v1", "oci-archive:train_v1.decrypted.oci.tar"},
		{"reg.example/station-aachen/train-42", "docker://reg.example/station-aachen/train-42:latest-decrypted", "docker://reg.example/station-aachen/train-42", "oci-archive:train-42_latest.decrypted.oci.tar"},
		{digestRef, "docker://reg.example/pht/train:decrypted", "docker://" + digestRef, "oci-archive:train_sha256-bbbbbbbbbbbb.decrypted.oci.tar"},
		{"docker-archive:/data/train.tar", "docker-archive:/data/train-decrypted.tar", "", "docker-archive:train-decrypted.tar"},
		{"oci-archive:/data/train.oci.tar:v1", "oci-archive:/data/train.oci-decrypted.tar:v1", "", "oci-archive:train.oci-decrypted.tar:v1"},
		{"oci:/data/layout:v1", "oci:/data/layout:v1-decrypted", "", ""},
		{"oci:/data/layout", "oci:/data/layout:decrypted", "", ""},
	}
	for _, c := range cases {
		in := parse(t, c.in)
		if got := in.DefaultOutput("decrypted").String(); got != c.want {
			t.Errorf("%q.DefaultOutput = %q, want %q", c.in, got, c.want)
		}
		back, private := c.back, c.private
		if back == "" {
			back = c.want
		}
		if private == "" {
			private = c.want
		}
		if got := in.WriteBack("decrypted").String(); got != back {
			t.Errorf("%q.WriteBack = %q, want %q", c.in, got, back)
		}
		if got := in.PrivateOutput("decrypted").String(); got != private {
			t.Errorf("%q.PrivateOutput = %q, want %q", c.in, got, private)
		}
	}
}

func writeTar(t testing.TB, p string, files map[string]string) {
	t.Helper()
	f := testutil.Must1(os.Create(p))(t)
	tw := tar.NewWriter(f)
	for n, c := range files {
		testutil.Must(t, tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg}))
		testutil.Must1(io.WriteString(tw, c))(t)
	}
	testutil.Must(t, tw.Close())
	testutil.Must(t, f.Close())
}

// dockerPlusLayout writes what Docker 25+ `docker save` writes: the docker
// save manifest.json and an OCI layout in one tar (entries of both inputs).
func dockerPlusLayout(t testing.TB, dockerTar, ociTar, out string) {
	t.Helper()
	f := testutil.Must1(os.Create(out))(t)
	tw := tar.NewWriter(f)
	seen := map[string]bool{}
	for _, in := range []string{dockerTar, ociTar} {
		r := testutil.Must1(os.Open(in))(t)
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			testutil.Must(t, err)
			if seen[h.Name] {
				continue
			}
			seen[h.Name] = true
			testutil.Must(t, tw.WriteHeader(h))
			testutil.Must1(io.Copy(tw, tr))(t)
		}
		r.Close()
	}
	testutil.Must(t, tw.Close())
	testutil.Must(t, f.Close())
}

func TestRefLoopback(t *testing.T) {
	for _, c := range []struct {
		ref  string
		want bool
	}{
		{"127.0.0.1:5000/pht/train:x", true},
		{"127.8.9.1/pht/train:x", true},
		{"localhost:5000/pht/train:x", true},
		{"docker://[::1]:5000/pht/train:x", true},
		{"0.0.0.0:5000/pht/train:x", false},
		{"harbor.example/pht/train:x", false},
		{"10.0.0.1:5000/pht/train:x", false},
		{"oci-archive:/tmp/x.tar", false},
	} {
		ref, err := ParseOutputRef(c.ref)
		if err != nil {
			t.Fatalf("%s: %v", c.ref, err)
		}
		if got := ref.Loopback(); got != c.want {
			t.Errorf("%s: Loopback() = %v, want %v", c.ref, got, c.want)
		}
	}
}
