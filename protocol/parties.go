package protocol

import (
	"crypto/rsa"
	"crypto/sha512"
	"errors"
	"fmt"
	"strings"
)

// Limits of the protocol.
const (
	// MinKeyBits is the smallest RSA modulus the protocol accepts for any
	// party (creator, builder, station): the reference's keys are 2048
	// bits, and a smaller key lets whoever factors it read or sign for
	// that party.
	MinKeyBits = 2048
	// MaxConfigSize is the largest train_config.json phtoci reads or
	// writes (1 MiB). post-run refuses an input whose rewritten config
	// would exceed it, because the next station could not read that
	// train.
	MaxConfigSize = 1 << 20
)

func keySize(field string, k *rsa.PublicKey) error {
	if n := k.N.BitLen(); n < MinKeyBits {
		return fmt.Errorf("%s: %d-bit RSA key, at least %d bits required", field, n, MinKeyBits)
	}
	return nil
}

// checkParties checks what Verify needs of every party before any
// signature: each key (creator, builder, every route entry) parses and has
// at least MinKeyBits, and no station id appears twice on the route (a
// duplicate would get the key twice and make "this station's entry"
// ambiguous). Errors are ErrInvalidConfig naming the field.
func checkParties(cfg *Config) error {
	for _, p := range []struct{ field, hex string }{
		{"creator.rsa_public_key", cfg.Creator.RSAPublicKey}, {"build.rsa_public_key", cfg.Build.RSAPublicKey},
	} {
		k, err := pubKey(p.field, p.hex)
		if err != nil {
			return err
		}
		if err := keySize(p.field, k); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	seen := map[string]int{}
	for i, r := range cfg.sortedRoute() {
		if j, dup := seen[r.Station]; dup {
			return fmt.Errorf("%w: route[%d].station: %q is also route[%d]; each station may appear once", ErrInvalidConfig, i, r.Station, j)
		}
		seen[r.Station] = i
		field := fmt.Sprintf("route[%d].rsa_public_key (station %s)", i, r.Station)
		k, err := pubKey(field, r.RSAPublicKey)
		if err != nil {
			return err
		}
		if err := keySize(field, k); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}

// checkBuildParties is checkParties for Build's options (ErrBuild).
func checkBuildParties(opts BuildOptions) error {
	if err := keySize("creator key", opts.CreatorPublic); err != nil {
		return fmt.Errorf("%w: %w", ErrBuild, err)
	}
	if err := keySize("builder key", &opts.BuilderKey.PublicKey); err != nil {
		return fmt.Errorf("%w: %w", ErrBuild, err)
	}
	seen := map[string]int{}
	for i, r := range opts.Route {
		if j, dup := seen[r.ID]; dup {
			return fmt.Errorf("%w: route[%d]: station %q is also route[%d]; each station may appear once", ErrBuild, i, r.ID, j)
		}
		seen[r.ID] = i
		if r.PublicKey == nil {
			return fmt.Errorf("%w: route[%d] (station %s): no public key", ErrBuild, i, r.ID)
		}
		if err := keySize(fmt.Sprintf("route[%d] (station %s)", i, r.ID), r.PublicKey); err != nil {
			return fmt.Errorf("%w: %w", ErrBuild, err)
		}
	}
	return nil
}

// checkWriteBack refuses a post-run at position pos whose new config would
// be larger than MaxConfigSize: Encode re-indents free-form values
// (@context, the Paillier key) the way the reference does, so a compact
// input under the limit can come out over it, and the next station could
// not read the train. The new config is encoded with placeholders of the
// exact sizes the post-run writes (hashes, signatures, wrapped keys).
func checkWriteBack(cfg *Config, pos int) error {
	next, err := writeBack(cfg, pos)
	if err != nil {
		return err
	}
	return checkEncodedSize(cfg, next, "this post-run")
}

// checkReadBack is checkWriteBack where a config is first read
// (ParseConfig), for the next post-run (the first station that has not
// signed), so that verify and pre-run refuse what that post-run would
// refuse. A finished route has no post-run to come: the researcher reads
// it as it is. A route key that does not parse leaves the placeholders
// out (Verify names the key).
func checkReadBack(cfg *Config) error {
	for i, r := range cfg.sortedRoute() {
		if r.Signature == nil {
			next := cfg
			if wb, err := writeBack(cfg, i); err == nil {
				next = wb
			}
			return checkEncodedSize(cfg, next, "the next post-run")
		}
	}
	return nil
}

// checkEncodedSize encodes next (what who writes for cfg) up to
// MaxConfigSize.
func checkEncodedSize(cfg, next *Config, who string) error {
	_, err := next.encode(MaxConfigSize)
	if errors.Is(err, errOverLimit) {
		return fmt.Errorf("%w: train_config.json: more than the %d-byte limit (MaxConfigSize) a station reads once %s writes it back in the reference's layout (@context %d bytes, creator.paillier_public_key %d bytes as received)",
			ErrInvalidConfig, MaxConfigSize, who, len(cfg.Context), len(cfg.Creator.PaillierPublicKey))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return nil
}

// writeBackSize is the size of the config a post-run at pos writes.
func writeBackSize(cfg *Config, pos int) (int, error) {
	next, err := writeBack(cfg, pos)
	if err != nil {
		return 0, err
	}
	raw, err := next.Encode()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return len(raw), nil
}

// writeBack is the config a post-run at pos writes, with placeholders of
// the exact sizes of what it signs and wraps.
func writeBack(cfg *Config, pos int) (*Config, error) {
	next := cfg.Clone()
	next.Route = next.sortedRoute()
	placeholder := func(field, pubHex string) (*string, error) {
		k, err := pubKey(field, pubHex)
		if err != nil {
			return nil, err
		}
		s := strings.Repeat("0", 2*k.Size())
		return &s, nil
	}
	var err error
	for i := range next.Route {
		next.Route[i].EncryptedKey = nil
		if i > pos {
			if next.Route[i].EncryptedKey, err = placeholder(fmt.Sprintf("route[%d].rsa_public_key", i), next.Route[i].RSAPublicKey); err != nil {
				return nil, err
			}
		}
	}
	if next.Creator.EncryptedKey, err = placeholder("creator.rsa_public_key", next.Creator.RSAPublicKey); err != nil {
		return nil, err
	}
	sig, err := placeholder(fmt.Sprintf("route[%d].rsa_public_key", pos), next.Route[pos].RSAPublicKey)
	if err != nil {
		return nil, err
	}
	digest := strings.Repeat("0", 2*sha512.Size)
	next.Route[pos].Signature = &ChainSignature{Digest: digest, Signature: *sig}
	next.ResultHash, next.ResultSignature = &digest, sig
	return next, nil
}
