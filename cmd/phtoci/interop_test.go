package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

const vectors = "../../testdata/vectors"

// TestReferenceTrains runs the reference-made images through phtoci: pre-run
// and post-run of train_initial by station_1 (docker and OCI forms), pre-run
// by station_2 of our output, and post-run by station_2 of the reference's
// after_station_1 image, then decryption by the user. The stale plaintext
// files in the images' lower layer stay hidden.
func TestReferenceTrains(t *testing.T) {
	key := func(n string) string { return filepath.Join(vectors, "keys", n+".pem") }
	results1 := filepath.Join(vectors, "images", "results_station_1")
	for _, form := range []string{"docker", "oci"} {
		t.Run(form, func(t *testing.T) {
			dir := t.TempDir()
			initial := filepath.Join(vectors, "images", "train_initial."+form+".tar")
			if form == "oci" {
				initial = "oci-archive:" + initial
			}
			ok(t, "verify", initial, "--quiet")
			ok(t, "verify", initial, "--station", "station_1", "--key", key("station_1"), "--quiet")
			dec := filepath.Join(dir, "dec.tar")
			ok(t, "pre-run", initial, "--station", "station_1", "--key", key("station_1"), "-o", dec, "--quiet")
			decImg := openRef(t, dec, oci.Options{})
			// The decrypted layer hides the stale files of the lower layer.
			checkMerged(t, decImg, map[string]bool{"opt/pht_train/stale_old.py": false, "opt/pht_results/stale_result.txt": false, "opt/pht_train/entrypoint.py": true})

			out := filepath.Join(dir, "after1.tar")
			ok(t, "post-run", initial, "--results", results1, "--station", "station_1", "--key", key("station_1"), "-o", out, "--quiet")
			img := openRef(t, out, oci.Options{})
			checkMerged(t, img, map[string]bool{"opt/pht_train/stale_old.py": false, "opt/pht_results/stale_result.txt": false, "opt/user_sym_key.key": true})
			n, _ := labels(t, img)
			if n != 2 {
				t.Fatalf("post-run output has %d layers, want the reference's base layer + 1", n)
			}
			// Fields the reference expects, per the vectors' rules (§9, §10).
			cfg := configOf(t, img)
			if cfg.ResultHash == nil || cfg.ResultSignature == nil || cfg.Route[0].Signature == nil || cfg.Creator.EncryptedKey == nil {
				t.Fatalf("post-run config misses fields the reference writes: %+v", cfg)
			}
			// Only the stations after this one get the new key; station_1's
			// own entry is null, the form the reference's builder gives the
			// entries of stations without a key (initial config's route[1]).
			if cfg.Route[0].EncryptedKey != nil || cfg.Route[1].EncryptedKey == nil {
				t.Errorf("after station_1: route[0].encrypted_key set = %v, route[1] set = %v; want null and set",
					cfg.Route[0].EncryptedKey != nil, cfg.Route[1].EncryptedKey != nil)
			}
			// Station 2's pre-run on the reference's terms (vectors README).
			got1 := referencePreRun(t, img, "station_2", loadPriv(t, key("station_2")))
			want1, err := os.ReadFile(filepath.Join(results1, "sub", "data.bin"))
			testutil.Must(t, err)
			if !bytes.Equal(got1["sub/data.bin"], want1) {
				t.Error("station 2 on the reference's terms: sub/data.bin differs from results_station_1")
			}
			raw := rawConfigOf(t, img)
			enc, err := cfg.Encode()
			testutil.Must(t, err)
			if !bytes.Equal(raw, enc) {
				t.Error("post-run config bytes are not in the reference's canonical form")
			}
			// Station 2 accepts our output, and the chain goes on.
			ok(t, "pre-run", out, "--station", "station_2", "--key", key("station_2"), "-o", filepath.Join(dir, "dec2.tar"), "--quiet")
			res2 := filepath.Join(dir, "res2")
			testutil.Must(t, os.MkdirAll(res2, 0o755))
			testutil.Must(t, os.WriteFile(filepath.Join(res2, "r.txt"), []byte("station 2 says hi\n"), 0o644))
			final := filepath.Join(dir, "after2.tar")
			ok(t, "post-run", out, "--results", res2, "--station", "station_2", "--key", key("station_2"), "-o", final, "--quiet")
			ok(t, "decrypt", final, "--key", key("user"), "--out", filepath.Join(dir, "final"), "--quiet")
			got, err := os.ReadFile(filepath.Join(dir, "final", "pht_results", "r.txt"))
			testutil.Must(t, err)
			if string(got) != "station 2 says hi\n" {
				t.Errorf("researcher got %q", got)
			}

			// The reference's own post-run output: station 2 pre-runs it, and
			// the user decrypts station 1's results from it.
			after1 := filepath.Join(vectors, "images", "after_station_1."+form+".tar")
			if form == "oci" {
				after1 = "oci-archive:" + after1
			}
			ok(t, "pre-run", after1, "--station", "station_2", "--key", key("station_2"), "-o", filepath.Join(dir, "ref-dec2.tar"), "--quiet")
			// The reference-terms reader agrees with the reference's own output
			// and with its null entries (station_2's in the initial train).
			if !bytes.Equal(referencePreRun(t, openRef(t, after1, oci.Options{}), "station_2", loadPriv(t, key("station_2")))["sub/data.bin"], want1) {
				t.Error("reference-terms pre-run of the reference's after_station_1 differs")
			}
			if configOf(t, openRef(t, initial, oci.Options{})).Route[1].EncryptedKey != nil {
				t.Error("the reference's initial train has a key for station_2; the null-entry premise no longer holds")
			}
			referencePreRun(t, openRef(t, initial, oci.Options{}), "station_1", loadPriv(t, key("station_1")))
			ok(t, "decrypt", after1, "--key", key("user"), "--out", filepath.Join(dir, "ref-final"), "--quiet")
			want, err := os.ReadFile(filepath.Join(results1, "sub", "data.bin"))
			testutil.Must(t, err)
			got, err = os.ReadFile(filepath.Join(dir, "ref-final", "pht_results", "sub", "data.bin"))
			testutil.Must(t, err)
			if !bytes.Equal(got, want) {
				t.Error("user-decrypted results of the reference's after_station_1 differ from results_station_1")
			}
		})
	}
}

// checkMerged resolves img's train paths and checks which paths are present.
func checkMerged(t *testing.T, img v1.Image, want map[string]bool) {
	t.Helper()
	res, err := layer.Resolve(img, []string{train.ConfigPath, train.TrainDir, train.ResultsDir, train.UserKeyPath})
	testutil.Must(t, err)
	defer res.Close()
	for p, present := range want {
		if _, got := res.Lookup(p); got != present {
			t.Errorf("merged view: %s present = %v, want %v", p, got, present)
		}
	}
}

func openTrain(t *testing.T, img v1.Image) *train.Train {
	t.Helper()
	tr, err := train.Open(img, train.Options{})
	testutil.Must(t, err)
	t.Cleanup(func() { tr.Close() })
	return tr
}

func configOf(t *testing.T, img v1.Image) *protocol.Config { return openTrain(t, img).Config }

func rawConfigOf(t *testing.T, img v1.Image) []byte { return openTrain(t, img).ConfigRaw }
