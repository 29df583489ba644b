// Package cbc is AES-CBC as phtoci's protocol uses it, faster than
// crypto/cipher on amd64 with AES-NI: decryption eight blocks at a time,
// encryption in a loop that keeps the round keys and the chaining in
// registers. Elsewhere (other key sizes, other architectures, CPUs
// without AES-NI, the purego build tag) it is crypto/cipher's CBC modes.
//
// Hand-written because no library does it: Go's crypto/cipher runs CBC one
// block after the other on amd64 (a call per 16 bytes, each waiting for
// the last round of the one before), although CBC decryption, unlike
// encryption, is parallel: each plaintext block is D(C[i]) XOR C[i-1], and
// every C is known before the first is decrypted, so the AES unit can work
// on eight blocks at once. Pre-run decrypts every byte of a train's
// results and files, post-run encrypts them. The key schedule is FIPS
// 197's, the decryption keys AESIMC of it (the Equivalent Inverse
// Cipher); tests compare every output with crypto/cipher's.
package cbc

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
)

// NewDecrypter returns a CBC decrypter for the AES key and iv, as
// cipher.NewCBCDecrypter(aes.NewCipher(key), iv) would. dst and src of its
// CryptBlocks may be the same slice, as with crypto/cipher, but must not
// overlap otherwise.
func NewDecrypter(key, iv []byte) (cipher.BlockMode, error) {
	return newMode(key, iv, newFast, cipher.NewCBCDecrypter)
}

// NewEncrypter returns a CBC encrypter for the AES key and iv, as
// cipher.NewCBCEncrypter(aes.NewCipher(key), iv) would. Encryption is
// sequential (each block needs the one before); on amd64 with AES-NI the
// loop keeps the round keys and the chaining in registers, so that a block
// costs its rounds and no call. dst and src may be the same slice.
func NewEncrypter(key, iv []byte) (cipher.BlockMode, error) {
	return newMode(key, iv, newFastEncrypter, cipher.NewCBCEncrypter)
}

// newMode is fast's mode where it runs, else crypto/cipher's (std).
func newMode(key, iv []byte, fast func(key, iv []byte) cipher.BlockMode, std func(cipher.Block, []byte) cipher.BlockMode) (cipher.BlockMode, error) {
	if len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("cbc: IV of %d bytes, want %d", len(iv), aes.BlockSize)
	}
	if m := fast(key, iv); m != nil {
		return m, nil
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return std(blk, iv), nil
}
