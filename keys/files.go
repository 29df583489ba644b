package keys

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
)

// KeyFiles names the files GenerateFiles wrote.
type KeyFiles struct {
	PrivatePath string `json:"private"`
	PublicPath  string `json:"public"`
	Fingerprint string `json:"fingerprint"`
	// PublicHex is the public key in the train config form.
	PublicHex string `json:"rsa_public_key"`
	// Encrypted says the private key file is encrypted under a password.
	Encrypted bool `json:"encrypted"`
}

// GenerateFiles makes a key pair of the given size and writes NAME.pem
// (private, mode 0600) and NAME.pub.pem. It refuses to overwrite either file.
func GenerateFiles(name string, bits int) (*KeyFiles, error) {
	return GenerateFilesEncrypted(name, bits, nil)
}

// GenerateFilesEncrypted is GenerateFiles with NAME.pem encrypted under
// password (PKCS#8, "ENCRYPTED PRIVATE KEY") unless password is empty.
func GenerateFilesEncrypted(name string, bits int, password []byte) (*KeyFiles, error) {
	r := &KeyFiles{PrivatePath: name + ".pem", PublicPath: name + ".pub.pem"}
	for _, p := range []string{r.PrivatePath, r.PublicPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s: %w", p, os.ErrExist)
		}
	}
	k, err := Generate(bits)
	if err != nil {
		return nil, err
	}
	if len(password) > 0 {
		r.Encrypted = true
		err = WriteEncryptedPrivateKey(r.PrivatePath, k, password)
	} else {
		err = WritePrivateKey(r.PrivatePath, k)
	}
	if err != nil {
		return nil, err
	}
	if err := WritePublicKey(r.PublicPath, &k.PublicKey); err != nil {
		return nil, err
	}
	return r, fillPublic(r, &k.PublicKey)
}

func fillPublic(r *KeyFiles, pub *rsa.PublicKey) error {
	h, err := EncodePublicKeyHex(pub)
	if err != nil {
		return err
	}
	r.PublicHex, r.Fingerprint = h, Fingerprint(pub)
	return nil
}

// ErrKeyFileMode reports a private key file that group or others can
// read, write or execute (CheckPrivateKeyFile).
var ErrKeyFileMode = errors.New("group or others can access the private key file")

// CheckPrivateKeyFile reports, with ErrKeyFileMode and the file's mode,
// a private key file whose permissions give group or others any access;
// a private key file should be 0600 (or 0400).
func CheckPrivateKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s: mode %04o: %w", path, m, ErrKeyFileMode)
	}
	return nil
}
