//go:build !amd64 || purego

package cbc

import "crypto/cipher"

func newFast(key, iv []byte) cipher.BlockMode { return nil }

func newFastEncrypter(key, iv []byte) cipher.BlockMode { return nil }

func fastAvailable() bool { return false }
