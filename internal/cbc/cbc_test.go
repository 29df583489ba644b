package cbc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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

// reference runs crypto/cipher's CBC mode.
func reference(t testing.TB, encrypt bool, key, iv, in []byte) []byte {
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(in))
	if encrypt {
		cipher.NewCBCEncrypter(blk, iv).CryptBlocks(out, in)
	} else {
		cipher.NewCBCDecrypter(blk, iv).CryptBlocks(out, in)
	}
	return out
}

// mode is NewEncrypter or NewDecrypter.
func mode(encrypt bool, key, iv []byte) (cipher.BlockMode, error) {
	if encrypt {
		return NewEncrypter(key, iv)
	}
	return NewDecrypter(key, iv)
}

// TestMatchesCryptoCipher: encrypting and decrypting, for every block
// count up to 40 (the eight-block loop, the one-block loop and both), in
// place and not, in one call and in calls of varying sizes (the chaining
// carries over), the output is crypto/cipher's; also for 16- and 24-byte
// keys.
func TestMatchesCryptoCipher(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		for _, ks := range []int{32, 16, 24} {
			for blocks := 0; blocks <= 40; blocks++ {
				key, iv := make([]byte, ks), make([]byte, 16)
				in := make([]byte, 16*blocks)
				rand.Read(key)
				rand.Read(iv)
				rand.Read(in)
				want := reference(t, encrypt, key, iv, in)
				where := fmt.Sprintf("encrypt %v, key %d bytes, %d blocks", encrypt, ks, blocks)

				m, err := mode(encrypt, key, iv)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(in))
				m.CryptBlocks(got, in)
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: differs from crypto/cipher", where)
				}

				m, _ = mode(encrypt, key, iv)
				inPlace := bytes.Clone(in)
				m.CryptBlocks(inPlace, inPlace)
				if !bytes.Equal(inPlace, want) {
					t.Fatalf("%s, in place: differs from crypto/cipher", where)
				}

				m, _ = mode(encrypt, key, iv)
				parts := bytes.Clone(in)
				for off, step := 0, 1; off < len(parts); step = step%11 + 1 {
					end := min(off+16*step, len(parts))
					m.CryptBlocks(parts[off:end], parts[off:end])
					off = end
				}
				if !bytes.Equal(parts, want) {
					t.Fatalf("%s, in parts: differs from crypto/cipher", where)
				}
			}
		}
	}
}

// TestFast: with a 32-byte key the AES-NI modes are taken where they can
// run, and crypto/cipher's for other key sizes.
func TestFast(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		m, err := mode(encrypt, make([]byte, 32), make([]byte, 16))
		if err != nil {
			t.Fatal(err)
		}
		if _, fast := m.(interface{ fast() }); fast != fastAvailable() {
			t.Errorf("AES-256 (encrypt %v): %T; the AES-NI modes can run here: %v", encrypt, m, fastAvailable())
		}
		m, _ = mode(encrypt, make([]byte, 16), make([]byte, 16))
		if _, fast := m.(interface{ fast() }); fast {
			t.Errorf("AES-128 (encrypt %v) took an AES-256 mode", encrypt)
		}
	}
}

// TestMisuse: the panics of crypto/cipher's CBC modes, and errors for a
// bad key or IV.
func TestMisuse(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		testMisuse(t, encrypt)
	}
}

func testMisuse(t *testing.T, encrypt bool) {
	if _, err := mode(encrypt, make([]byte, 31), make([]byte, 16)); err == nil {
		t.Error("a 31-byte key was taken")
	}
	if _, err := mode(encrypt, make([]byte, 32), make([]byte, 15)); err == nil {
		t.Error("a 15-byte IV was taken")
	}
	m, _ := mode(encrypt, make([]byte, 32), make([]byte, 16))
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
					t.Errorf("%s (encrypt %v): no panic", name, encrypt)
				}
			}()
			f()
		}()
	}
}

// FuzzModes: both directions against crypto/cipher, in two calls.
func FuzzModes(f *testing.F) {
	f.Add(make([]byte, 32), make([]byte, 16), make([]byte, 160), uint8(3), false)
	f.Add(make([]byte, 32), make([]byte, 16), make([]byte, 160), uint8(9), true)
	f.Fuzz(func(t *testing.T, key, iv, ct []byte, split uint8, encrypt bool) {
		if len(key) != 32 || len(iv) != 16 {
			return
		}
		ct = ct[:len(ct)/16*16]
		want := reference(t, encrypt, key, iv, ct)
		m, err := mode(encrypt, key, iv)
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

// BenchmarkModes: internal/cbc against crypto/cipher, both directions,
// 256 KiB in place.
func BenchmarkModes(b *testing.B) {
	key, iv := make([]byte, 32), make([]byte, 16)
	buf := make([]byte, 256<<10)
	blk, _ := aes.NewCipher(key)
	for _, encrypt := range []bool{true, false} {
		std := cipher.NewCBCDecrypter(blk, iv)
		name := "decrypt"
		if encrypt {
			std, name = cipher.NewCBCEncrypter(blk, iv), "encrypt"
		}
		ours, _ := mode(encrypt, key, iv)
		for impl, m := range map[string]cipher.BlockMode{"phtoci": ours, "crypto-cipher": std} {
			b.Run(name+"/"+impl, func(b *testing.B) {
				b.SetBytes(int64(len(buf)))
				for range b.N {
					m.CryptBlocks(buf, buf)
				}
			})
		}
	}
}
