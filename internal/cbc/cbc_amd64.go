//go:build amd64 && !purego

package cbc

import (
	"crypto/cipher"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// decryptBlocks decrypts n blocks of src into dst with the decryption
// round keys dk, chaining from *iv, and leaves the last ciphertext block
// in *iv.
//
//go:noescape
func decryptBlocks(dk *[15][16]byte, iv *[16]byte, dst, src *byte, n int)

// encryptBlocks encrypts n blocks of src into dst with the round keys ek,
// chaining from *iv, and leaves the last ciphertext block in *iv.
//
//go:noescape
func encryptBlocks(ek *[15][16]byte, iv *[16]byte, dst, src *byte, n int)

// invMixColumns is AESIMC.
//
//go:noescape
func invMixColumns(dst, src *[16]byte)

// fastAvailable says whether newFast can take AES-256 keys here.
func fastAvailable() bool { return cpu.X86.HasAES }

type decrypter struct {
	dk [15][16]byte
	iv [16]byte
}

func newFast(key, iv []byte) cipher.BlockMode {
	if len(key) != 32 || !fastAvailable() {
		return nil
	}
	ek := expand256(key)
	d := &decrypter{}
	d.dk[0], d.dk[14] = ek[14], ek[0]
	for i := 1; i < 14; i++ {
		invMixColumns(&d.dk[i], &ek[14-i])
	}
	copy(d.iv[:], iv)
	return d
}

func (d *decrypter) BlockSize() int { return 16 }

// fast marks the AES-NI decrypter (tests).
func (d *decrypter) fast() {}

// CryptBlocks decrypts src into dst, as crypto/cipher's CBC decrypter does,
// with the same panics on misuse.
func (d *decrypter) CryptBlocks(dst, src []byte) {
	checkBlocks(dst, src)
	if len(src) == 0 {
		return
	}
	decryptBlocks(&d.dk, &d.iv, &dst[0], &src[0], len(src)/16)
}

type encrypter struct {
	ek [15][16]byte
	iv [16]byte
}

func newFastEncrypter(key, iv []byte) cipher.BlockMode {
	if len(key) != 32 || !fastAvailable() {
		return nil
	}
	e := &encrypter{ek: expand256(key)}
	copy(e.iv[:], iv)
	return e
}

func (e *encrypter) BlockSize() int { return 16 }

// fast marks the AES-NI encrypter (tests).
func (e *encrypter) fast() {}

// CryptBlocks encrypts src into dst, as crypto/cipher's CBC encrypter does,
// with the same panics on misuse.
func (e *encrypter) CryptBlocks(dst, src []byte) {
	checkBlocks(dst, src)
	if len(src) == 0 {
		return
	}
	encryptBlocks(&e.ek, &e.iv, &dst[0], &src[0], len(src)/16)
}

// checkBlocks panics as crypto/cipher's CBC modes do on misuse.
func checkBlocks(dst, src []byte) {
	if len(src)%16 != 0 {
		panic("cbc: input not full blocks")
	}
	if len(dst) < len(src) {
		panic("cbc: output smaller than input")
	}
	if len(src) == 0 {
		return
	}
	s, t := uintptr(unsafe.Pointer(&src[0])), uintptr(unsafe.Pointer(&dst[0]))
	if s != t && s < t+uintptr(len(src)) && t < s+uintptr(len(src)) {
		panic("cbc: invalid buffer overlap")
	}
}
