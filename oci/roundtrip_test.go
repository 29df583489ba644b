package oci

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
)

// outputs are one output reference per file transport under dir.
func fileOutputs(t *testing.T, dir, name string) []Ref {
	return []Ref{
		parseOut(t, "docker-archive:"+filepath.Join(dir, name+".docker.tar")),
		parseOut(t, "oci-archive:"+filepath.Join(dir, name+".oci.tar")+":v1"),
		parseOut(t, "oci:"+filepath.Join(dir, "layout")+":"+name),
	}
}

// checkRoundTrip writes img to out, reads it back, writes that again to a
// second place of the same transport and reads it back: the digests Write
// returns are the digests Open sees, they are stable on the second trip, the
// diff IDs are unchanged, and the image is valid (validImage: every blob's
// digest and size checked). It returns the image read back.
func checkRoundTrip(t *testing.T, img v1.Image, out, out2 Ref, o Options) v1.Image {
	t.Helper()
	d1 := testutil.Must1(Write(ctx, out, img, o))(t)
	back := open(t, out, o)
	if got := digest(t, back); got != d1 {
		t.Errorf("%s: Write returned %s, Open reads %s", out, d1, got)
	}
	if !slices.Equal(diffIDs(t, back), diffIDs(t, img)) {
		t.Errorf("%s: diff IDs changed: %v → %v", out, diffIDs(t, img), diffIDs(t, back))
	}
	if err := validImage(back); err != nil {
		t.Errorf("%s: read back image is invalid: %v", out, err)
	}
	d2 := testutil.Must1(Write(ctx, out2, back, o))(t)
	if d2 != d1 {
		t.Errorf("%s → %s: digest %s became %s on the second trip", out, out2, d1, d2)
	}
	if got := digest(t, open(t, out2, o)); got != d2 {
		t.Errorf("%s: Write returned %s, Open reads %s", out2, d2, got)
	}
	return back
}

// TestRoundTripVectorsFiles: the vectors' docker and OCI images, read by
// content detection, go through docker-archive, oci-archive and oci layout
// and back. OCI-preserving transports keep the exact manifest digest and
// media type; docker-archive of a docker image keeps its digest.
func TestRoundTripVectorsFiles(t *testing.T) {
	for _, v := range []string{"train_initial.docker.tar", "train_initial.oci.tar", "after_station_1.docker.tar", "after_station_1.oci.tar"} {
		t.Run(v, func(t *testing.T) {
			in := parse(t, vector(v))
			img := open(t, in, Options{})
			d0, mt0 := digest(t, img), testutil.Must1(img.MediaType())(t)
			kind, _, _ := refParts(in)
			if kind == "docker-archive" && mt0 != types.DockerManifestSchema2 || kind == "oci-archive" && mt0 != types.OCIManifestSchema1 {
				t.Fatalf("%s read as %s has media type %s", v, kind, mt0)
			}
			dir, dir2 := t.TempDir(), t.TempDir()
			outs, outs2 := fileOutputs(t, dir, "a"), fileOutputs(t, dir2, "b")
			for i, out := range outs {
				back := checkRoundTrip(t, img, out, outs2[i], Options{})
				mt := testutil.Must1(back.MediaType())(t)
				outKind, _, _ := refParts(out)
				keeps := outKind != "docker-archive" || mt0 == types.DockerManifestSchema2
				if keeps && (digest(t, back) != d0 || mt != mt0) {
					t.Errorf("%s → %s: %s %s became %s %s", v, out, mt0, d0, mt, digest(t, back))
				}
			}
		})
	}
}

// TestRoundTripRegistry: vectors and random images (OCI and Docker media
// types) pushed to the real registry (plain, htpasswd, htpasswd+TLS) read
// back with the same digest and media type, and travel on to files and back.
func TestRoundTripRegistry(t *testing.T) {
	for _, c := range []struct {
		name string
		o    testreg.Options
	}{{"plain", testreg.Options{}}, {"auth", testreg.Options{Auth: true}}, {"auth+tls", testreg.Options{Auth: true, TLS: true}}} {
		t.Run(c.name, func(t *testing.T) {
			reg := testreg.Start(t, c.o)
			o := regOpts(reg)
			rnd := testutil.Must1(random.Image(4096, 3))(t)
			imgs := map[string]v1.Image{
				"docker": open(t, parse(t, vector("train_initial.docker.tar")), Options{}),
				"oci":    open(t, parse(t, vector("train_initial.oci.tar")), Options{}),
				"random": rnd,
			}
			for n, img := range imgs {
				d0, mt0 := digest(t, img), testutil.Must1(img.MediaType())(t)
				out, out2 := regRef(t, reg, "rt/"+n+":a"), regRef(t, reg, "rt/"+n+"-copy:b")
				back := checkRoundTrip(t, img, out, out2, o)
				if digest(t, back) != d0 || testutil.Must1(back.MediaType())(t) != mt0 {
					t.Errorf("%s: pushed %s %s, pulled %s %s", n, mt0, d0, testutil.Must1(back.MediaType())(t), digest(t, back))
				}
				dir := t.TempDir()
				for i, f := range fileOutputs(t, dir, n) {
					checkRoundTrip(t, back, f, fileOutputs(t, t.TempDir(), n+"2")[i], Options{})
				}
			}
			if c.o.Auth {
				// Without credentials the registry refuses.
				_, err := Open(ctx, regRef(t, reg, "rt/random:a"), Options{Transport: reg.Transport(), Keychain: emptyKeychain{}})
				if err == nil {
					t.Error("Open without credentials succeeded on an htpasswd registry")
				}
			}
		})
	}
}

type emptyKeychain struct{}

func (emptyKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}
