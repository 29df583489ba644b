package keys

import (
	"crypto/rsa"
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
}

// GenerateFiles makes a key pair of the given size and writes NAME.pem
// (private, mode 0600) and NAME.pub.pem. It refuses to overwrite either file.
func GenerateFiles(name string, bits int) (*KeyFiles, error) {
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
	if err := WritePrivateKey(r.PrivatePath, k); err != nil {
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
