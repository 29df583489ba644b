package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"aead.dev/minisign"
)

// signSums writes SHA256SUMS.minisig, a minisign signature over dir's
// SHA256SUMS, with the minisign private key at keyPath (encrypted with the
// password in passwordFile, or unencrypted when passwordFile is empty).
// SHA256SUMS lists every artifact, the container image archive and its
// index digest among them, so this one signature covers them all; anyone
// checks it offline with `minisign -Vm SHA256SUMS -P KEY` (Debian's
// minisign, or signify-compatible tools) and then `sha256sum -c`. The key
// is read here and nowhere else: it is never copied into the release.
func signSums(dir, keyPath, passwordFile, trusted string) error {
	raw, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	var key minisign.PrivateKey
	if minisign.IsEncrypted(raw) {
		if passwordFile == "" {
			return fmt.Errorf("signing key %s is encrypted: give its password file", keyPath)
		}
		pw, err := os.ReadFile(passwordFile)
		if err != nil {
			return fmt.Errorf("signing key password: %w", err)
		}
		if key, err = minisign.DecryptKey(strings.TrimRight(string(pw), "\r\n"), raw); err != nil {
			return fmt.Errorf("signing key %s: wrong password or not a minisign key", keyPath)
		}
	} else if err := key.UnmarshalText(raw); err != nil {
		return fmt.Errorf("signing key %s: not a minisign private key", keyPath)
	}
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return err
	}
	sig := minisign.SignWithComments(key, sums, trusted, "phtoci release signature")
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS.minisig"), sig, 0o644)
}
