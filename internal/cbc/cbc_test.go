package cbc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"testing"
)

// TestExpand256: the key schedule of FIPS 197 Appendix A.3.
func TestExpand256(t *testing.T) {
	key, _ := hex.DecodeString("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
	rk := expand256(key)
	if got := hex.EncodeToString(rk[14][12:]); got != "706c631e" {
		t.Errorf("w[59] = %s, want 706c631e", got)
	}
	if got := hex.EncodeToString(rk[2][:4]); got != "9ba35411" {
		t.Errorf("w[8] = %s, want 9ba35411", got)
	}
}

// reference decrypts with crypto/cipher.
func reference(t testing.TB, key, iv, ct []byte) []byte {
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(blk, iv).CryptBlocks(out, ct)
	return out
}

// TestDecrypterMatchesCryptoCipher: for every block count up to 40 (the
// eight-block loop, the one-block loop and both), in place and not, in one
// call and in calls of varying sizes (the chaining carries over), the
// plaintext is crypto/cipher's; also for 16- and 24-byte keys.
func TestDecrypterMatchesCryptoCipher(t *testing.T) {
	for _, ks := range []int{32, 16, 24} {
		for blocks := 0; blocks <= 40; blocks++ {
			key, iv := make([]byte, ks), make([]byte, 16)
			ct := make([]byte, 16*blocks)
			rand.Read(key)
			rand.Read(iv)
			rand.Read(ct)
			want := reference(t, key, iv, ct)

			m, err := NewDecrypter(key, iv)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(ct))
			m.CryptBlocks(got, ct)
			if !bytes.Equal(got, want) {
				t.Fatalf("key %d bytes, %d blocks: differs from crypto/cipher", ks, blocks)
			}

			m, _ = NewDecrypter(key, iv)
			inPlace := bytes.Clone(ct)
			m.CryptBlocks(inPlace, inPlace)
			if !bytes.Equal(inPlace, want) {
				t.Fatalf("key %d bytes, %d blocks in place: differs from crypto/cipher", ks, blocks)
			}

			m, _ = NewDecrypter(key, iv)
			parts := bytes.Clone(ct)
			for off, step := 0, 1; off < len(parts); step = step%11 + 1 {
				end := min(off+16*step, len(parts))
				m.CryptBlocks(parts[off:end], parts[off:end])
				off = end
			}
			if !bytes.Equal(parts, want) {
				t.Fatalf("key %d bytes, %d blocks in parts: differs from crypto/cipher", ks, blocks)
			}
		}
	}
}

// TestDecrypterFast: with a 32-byte key the AES-NI decrypter is taken
// where it can run, and crypto/cipher's for other key sizes.
func TestDecrypterFast(t *testing.T) {
	m, err := NewDecrypter(make([]byte, 32), make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	if _, fast := m.(interface{ fast() }); fast != fastAvailable() {
		t.Errorf("AES-256: %T; the AES-NI decrypter can run here: %v", m, fastAvailable())
	}
	m, _ = NewDecrypter(make([]byte, 16), make([]byte, 16))
	if _, fast := m.(interface{ fast() }); fast {
		t.Error("AES-128 took the AES-256 decrypter")
	}
}

// TestDecrypterMisuse: the panics of crypto/cipher's decrypter, and errors
// for a bad key or IV.
func TestDecrypterMisuse(t *testing.T) {
	if _, err := NewDecrypter(make([]byte, 31), make([]byte, 16)); err == nil {
		t.Error("a 31-byte key was taken")
	}
	if _, err := NewDecrypter(make([]byte, 32), make([]byte, 15)); err == nil {
		t.Error("a 15-byte IV was taken")
	}
	m, _ := NewDecrypter(make([]byte, 32), make([]byte, 16))
	for name, f := range map[string]func(){
		"partial block": func() { m.CryptBlocks(make([]byte, 32), make([]byte, 17)) },
		"short dst":     func() { m.CryptBlocks(make([]byte, 16), make([]byte, 32)) },
		"overlap": func() {
			b := make([]byte, 64)
			m.CryptBlocks(b[16:], b[:48])
		},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func FuzzDecrypter(f *testing.F) {
	f.Add(make([]byte, 32), make([]byte, 16), make([]byte, 160), uint8(3))
	f.Fuzz(func(t *testing.T, key, iv, ct []byte, split uint8) {
		if len(key) != 32 || len(iv) != 16 {
			return
		}
		ct = ct[:len(ct)/16*16]
		want := reference(t, key, iv, ct)
		m, err := NewDecrypter(key, iv)
		if err != nil {
			t.Fatal(err)
		}
		got := bytes.Clone(ct)
		k := min(int(split)*16, len(got))
		m.CryptBlocks(got[:k], got[:k])
		m.CryptBlocks(got[k:], got[k:])
		if !bytes.Equal(got, want) {
			t.Fatal("differs from crypto/cipher")
		}
	})
}

func BenchmarkDecrypt(b *testing.B) {
	key, iv := make([]byte, 32), make([]byte, 16)
	buf := make([]byte, 256<<10)
	b.Run("phtoci", func(b *testing.B) {
		m, _ := NewDecrypter(key, iv)
		b.SetBytes(int64(len(buf)))
		for range b.N {
			m.CryptBlocks(buf, buf)
		}
	})
	b.Run("crypto-cipher", func(b *testing.B) {
		blk, _ := aes.NewCipher(key)
		m := cipher.NewCBCDecrypter(blk, iv)
		b.SetBytes(int64(len(buf)))
		for range b.N {
			m.CryptBlocks(buf, buf)
		}
	})
}
