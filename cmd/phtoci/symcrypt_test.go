package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"errors"
)

// The tests' own key unwrapping and file encryption, written from the
// protocol's description (vectors §2, §3) with the standard library, so
// that the trains they craft do not depend on package protocol's code.

// unwrapKey decrypts a wrapped symmetric key: RSAES-OAEP, SHA-512,
// MGF1-SHA-512, empty label.
func unwrapKey(k *rsa.PrivateKey, wrapped []byte) ([]byte, error) {
	return rsa.DecryptOAEP(sha512.New(), nil, k, wrapped, nil)
}

// encryptCBC is IV || AES-256-CBC(PKCS#7(plain)) with a random IV.
func encryptCBC(key, plain []byte) ([]byte, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	p := aes.BlockSize - len(plain)%aes.BlockSize
	out := make([]byte, aes.BlockSize+len(plain)+p)
	if _, err := rand.Read(out[:aes.BlockSize]); err != nil {
		return nil, err
	}
	body := out[aes.BlockSize:]
	copy(body, plain)
	copy(body[len(plain):], bytes.Repeat([]byte{byte(p)}, p))
	cipher.NewCBCEncrypter(blk, out[:aes.BlockSize]).CryptBlocks(body, body)
	return out, nil
}

// decryptCBC is encryptCBC's inverse; bad lengths and bad padding are
// errors.
func decryptCBC(key, c []byte) ([]byte, error) {
	if len(c) < 2*aes.BlockSize || len(c)%aes.BlockSize != 0 {
		return nil, errors.New("not IV || CBC blocks")
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(c)-aes.BlockSize)
	cipher.NewCBCDecrypter(blk, c[:aes.BlockSize]).CryptBlocks(out, c[aes.BlockSize:])
	p := int(out[len(out)-1])
	if p < 1 || p > aes.BlockSize || !bytes.Equal(out[len(out)-p:], bytes.Repeat([]byte{byte(p)}, p)) {
		return nil, errors.New("bad padding")
	}
	return out[:len(out)-p], nil
}
