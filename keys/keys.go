// Package keys loads, generates and encodes the RSA keys of the PHT
// protocol: private keys in every PEM form stations have (PKCS#1, PKCS#8,
// legacy encrypted PEM, encrypted PKCS#8), public keys as SPKI or PKCS#1
// PEM, and the hex-of-PEM form train configs carry. It knows nothing about
// the protocol itself.
package keys

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/youmark/pkcs8"
)

// Sentinel errors; test with errors.Is.
var (
	ErrNoPEM            = errors.New("no PEM block")
	ErrWrongPassword    = errors.New("wrong password")
	ErrPasswordRequired = errors.New("key is encrypted; a password is required")
	ErrNotRSA           = errors.New("not an RSA key")
	ErrKeySize          = errors.New("unsupported key size")
)

// ParsePrivateKey reads an RSA private key from PEM: PKCS#1 ("RSA PRIVATE
// KEY"), PKCS#8 ("PRIVATE KEY"), legacy encrypted PEM (Proc-Type:
// 4,ENCRYPTED) and encrypted PKCS#8 ("ENCRYPTED PRIVATE KEY", PBES2).
func ParsePrivateKey(pemBytes, password []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, ErrNoPEM
	}
	der := blk.Bytes
	//lint:ignore SA1019 legacy encrypted PEM is what stations in the field have.
	if x509.IsEncryptedPEMBlock(blk) { //nolint:staticcheck
		if len(password) == 0 {
			return nil, ErrPasswordRequired
		}
		var err error
		der, err = x509.DecryptPEMBlock(blk, password) //nolint:staticcheck
		if err != nil {
			return nil, ErrWrongPassword
		}
	}
	var key any
	var err error
	switch blk.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(der)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(der)
	case "ENCRYPTED PRIVATE KEY":
		if len(password) == 0 {
			return nil, ErrPasswordRequired
		}
		key, err = pkcs8.ParsePKCS8PrivateKey(der, password)
		if err != nil {
			return nil, ErrWrongPassword
		}
	case "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "DSA PRIVATE KEY":
		return nil, fmt.Errorf("%w: PEM type %q", ErrNotRSA, blk.Type)
	default:
		return nil, fmt.Errorf("%w: unexpected PEM type %q, expected RSA PRIVATE KEY, PRIVATE KEY or ENCRYPTED PRIVATE KEY", ErrNoPEM, blk.Type)
	}
	if err != nil {
		if x509.IsEncryptedPEMBlock(blk) { //nolint:staticcheck
			return nil, ErrWrongPassword // a wrong password decrypts to garbage
		}
		return nil, fmt.Errorf("parsing %s: %w", blk.Type, err)
	}
	k, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: found %T", ErrNotRSA, key)
	}
	return k, nil
}

// LoadPrivateKey reads a private key file. Errors name the path, never the
// password.
func LoadPrivateKey(path string, password []byte) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	k, err := ParsePrivateKey(b, password)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return k, nil
}

// ParsePublicKey reads an RSA public key from SPKI ("PUBLIC KEY") or PKCS#1
// ("RSA PUBLIC KEY") PEM, or from the hex of such PEM text.
func ParsePublicKey(b []byte) (*rsa.PublicKey, error) {
	t := bytes.TrimSpace(b)
	if len(t) > 0 && !bytes.HasPrefix(t, []byte("-----")) {
		if d, err := hex.DecodeString(string(t)); err == nil {
			b = d
		}
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, ErrNoPEM
	}
	switch blk.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PUBLIC KEY: %w", err)
		}
		pub, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: found %T", ErrNotRSA, k)
		}
		return pub, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing RSA PUBLIC KEY: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: unexpected PEM type %q, expected PUBLIC KEY or RSA PUBLIC KEY", ErrNoPEM, blk.Type)
}

// ParsePublicKeyHex reads the train config form: hex (either case) of PEM.
func ParsePublicKeyHex(s string) (*rsa.PublicKey, error) {
	d, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("public key: not hex: %w", err)
	}
	return ParsePublicKey(d)
}

// LoadPublicKey reads a file holding PEM or hex-of-PEM.
func LoadPublicKey(path string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return k, nil
}

// EncodePublicKeyPEM returns SPKI PEM text as the reference writes it
// (64-column base64, final newline).
func EncodePublicKeyPEM(pub *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// EncodePublicKeyHex returns the config form: lowercase hex of the SPKI PEM.
func EncodePublicKeyHex(pub *rsa.PublicKey) (string, error) {
	p, err := EncodePublicKeyPEM(pub)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(p), nil
}

// Generate makes an RSA key of 2048 (bits 0), 3072 or 4096 bits.
func Generate(bits int) (*rsa.PrivateKey, error) {
	switch bits {
	case 0:
		bits = 2048
	case 2048, 3072, 4096:
	default:
		return nil, fmt.Errorf("%w: %d bits, expected 2048, 3072 or 4096", ErrKeySize, bits)
	}
	return rsa.GenerateKey(rand.Reader, bits)
}

// EncodePrivateKeyPEM returns the key as unencrypted PKCS#1 PEM ("RSA
// PRIVATE KEY"), the form the reference writes.
func EncodePrivateKeyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// pkcs8Opts encrypt private keys: PBES2 with PBKDF2-HMAC-SHA256 (600,000
// iterations, OWASP's figure for it) and AES-256-CBC, which OpenSSL,
// Python's cryptography and ParsePrivateKey read.
var pkcs8Opts = &pkcs8.Opts{
	Cipher:  pkcs8.AES256CBC,
	KDFOpts: pkcs8.PBKDF2Opts{SaltSize: 16, IterationCount: 600_000, HMACHash: crypto.SHA256},
}

// EncodeEncryptedPrivateKeyPEM returns k as encrypted PKCS#8 PEM
// ("ENCRYPTED PRIVATE KEY") under password, which must not be empty.
func EncodeEncryptedPrivateKeyPEM(k *rsa.PrivateKey, password []byte) ([]byte, error) {
	if len(password) == 0 {
		return nil, ErrPasswordRequired
	}
	der, err := pkcs8.MarshalPrivateKey(k, password, pkcs8Opts)
	if err != nil {
		return nil, fmt.Errorf("encrypting the private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), nil
}

// WriteEncryptedPrivateKey writes k as encrypted PKCS#8 PEM under
// password with mode 0600, atomically; it refuses to overwrite an
// existing file.
func WriteEncryptedPrivateKey(path string, k *rsa.PrivateKey, password []byte) error {
	b, err := EncodeEncryptedPrivateKeyPEM(k, password)
	if err != nil {
		return err
	}
	return writeAtomic(path, b, 0o600)
}

// WritePrivateKey writes k as PKCS#1 PEM with mode 0600, atomically; it
// refuses to overwrite an existing file.
func WritePrivateKey(path string, k *rsa.PrivateKey) error {
	return writeAtomic(path, EncodePrivateKeyPEM(k), 0o600)
}

// WritePublicKey writes SPKI PEM with mode 0644, atomically.
func WritePublicKey(path string, pub *rsa.PublicKey) error {
	p, err := EncodePublicKeyPEM(pub)
	if err != nil {
		return err
	}
	return writeAtomic(path, p, 0o644)
}

// writeAtomic writes data to the new file path with mode: it never
// replaces a file, also one that appears while it writes.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	return fsutil.WriteAtomic(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}, fsutil.NoReplace())
}

// Fingerprint is "SHA256:" + unpadded base64 of SHA-256 over the SPKI DER,
// as ssh prints fingerprints.
func Fingerprint(pub *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(der)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(s[:])
}

// Equal reports whether a and b are the same public key.
func Equal(a, b *rsa.PublicKey) bool {
	return a != nil && b != nil && a.Equal(b)
}
