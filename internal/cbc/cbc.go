// Package cbc decrypts AES-CBC. On amd64 with AES-NI it decrypts eight
// blocks at a time, in one loop that keeps the chaining in registers;
// elsewhere it is crypto/cipher's CBC decrypter.
//
// Hand-written because no library does it: Go's crypto/cipher decrypts CBC
// one block after the other on amd64 (a call per 16 bytes, each waiting for
// the last round of the one before), although CBC decryption, unlike
// encryption, is parallel: each plaintext block is D(C[i]) XOR C[i-1], and
// every C is known before the first is decrypted. The AES-NI unit then
// works on eight blocks at once. Pre-run decrypts every byte of a train's
// results and files; this makes its AES-256 decryption about four times
// faster. The key schedule is FIPS 197's, the decryption keys AESIMC of
// it (the Equivalent Inverse Cipher); tests compare every output with
// crypto/cipher's.
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
	if len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("cbc: IV of %d bytes, want %d", len(iv), aes.BlockSize)
	}
	if m := newFast(key, iv); m != nil {
		return m, nil
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewCBCDecrypter(blk, iv), nil
}
