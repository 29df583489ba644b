package protocol

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"testing"
	"testing/fstest"
)

// TestNoPaddingOracle: a train file or previous result whose ciphertext
// has bad padding, and one that decrypts (good padding) to other bytes,
// fail with the same message and the same sentinels: CBC has no MAC, and
// an attacker who could tell a padding failure from a hash failure would
// have a padding oracle.
func TestNoPaddingOracle(t *testing.T) {
	cfg, files := buildTrain(t, "st-1", "st-2")
	cfg1, out1 := runStation(t, cfg, files.asFS("pht_train"), fstest.MapFS{}, "st-1", fstest.MapFS{"r.txt": {Data: []byte("result one")}})
	train1, res1 := out1.asFS("pht_train"), out1.asFS("pht_results")
	key, err := unwrapKey(genKey(t, "st-2"), mustDecode(*cfg1.Route[1].EncryptedKey))
	if err != nil {
		t.Fatal(err)
	}
	replace := func(f fs.FS, name string, data []byte) fs.FS {
		m := fstest.MapFS{}
		fs.WalkDir(f, ".", func(p string, d fs.DirEntry, err error) error {
			if d != nil && d.Type().IsRegular() {
				b, _ := fs.ReadFile(f, p)
				m[p] = &fstest.MapFile{Data: b}
			}
			return nil
		})
		m[name] = &fstest.MapFile{Data: data}
		return m
	}
	// badPadding flips the last byte of the last block's predecessor, the
	// classic oracle probe, until the padding is invalid; goodPadding
	// flips a byte of an earlier block: the padding stays valid, the
	// plaintext (and so the hash) changes.
	badPadding := func(f fs.FS, name string) fs.FS {
		ct, _ := fs.ReadFile(f, name)
		for v := byte(1); ; v++ {
			c := append([]byte(nil), ct...)
			c[len(c)-17] ^= v
			if err := decryptStream(io.Discard, bytes.NewReader(c), key); errors.Is(err, ErrDecryption) {
				return replace(f, name, c)
			}
		}
	}
	goodPadding := func(f fs.FS, name string) fs.FS {
		ct, _ := fs.ReadFile(f, name)
		c := append([]byte(nil), ct...)
		c[0] ^= 1 // the IV: the first plaintext block changes, nothing else
		if err := decryptStream(io.Discard, bytes.NewReader(c), key); err != nil {
			t.Fatalf("probe with valid padding: %v", err)
		}
		return replace(f, name, c)
	}
	for _, c := range []struct {
		tree         string
		padding, sum [2]fs.FS // train, results
	}{
		{"pht_train", [2]fs.FS{badPadding(train1, "entrypoint.py"), res1}, [2]fs.FS{goodPadding(train1, "entrypoint.py"), res1}},
		{"pht_results", [2]fs.FS{train1, badPadding(res1, "r.txt")}, [2]fs.FS{train1, goodPadding(res1, "r.txt")}},
	} {
		t.Run(c.tree, func(t *testing.T) {
			perr := PreRunCheck(cfg1, c.padding[0], c.padding[1], st(t, "st-2"), memSink{})
			herr := PreRunCheck(cfg1, c.sum[0], c.sum[1], st(t, "st-2"), memSink{})
			if perr == nil || herr == nil {
				t.Fatalf("tampered %s accepted: padding %v, hash %v", c.tree, perr, herr)
			}
			if perr.Error() != herr.Error() {
				t.Errorf("padding and hash failures differ:\n  %s\n  %s", perr, herr)
			}
			if want := "/opt/" + c.tree + ": decryption or integrity check failed"; perr.Error() != want {
				t.Errorf("got %q, want %q", perr, want)
			}
			for _, s := range []error{ErrIntegrity, ErrVerification, ErrDecryption, ErrImmutableChanged, ErrPreviousResultsChanged} {
				if errors.Is(perr, s) != errors.Is(herr, s) {
					t.Errorf("errors.Is(_, %v): padding %v, hash %v", s, errors.Is(perr, s), errors.Is(herr, s))
				}
			}
			if !errors.Is(perr, ErrIntegrity) {
				t.Errorf("%v is not ErrIntegrity", perr)
			}
			// The researcher's decryption gives the same, too.
			ukf := mustDecode(*cfg1.Creator.EncryptedKey)
			derr := Decrypt(cfg1, genKey(t, "user"), ukf, c.padding[0], c.padding[1], memSink{}, true)
			dherr := Decrypt(cfg1, genKey(t, "user"), ukf, c.sum[0], c.sum[1], memSink{}, true)
			if derr == nil || dherr == nil || derr.Error() != dherr.Error() || derr.Error() != perr.Error() {
				t.Errorf("decrypt: padding %v, hash %v", derr, dherr)
			}
		})
	}
}
