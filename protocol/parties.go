package protocol

import (
	"crypto/rsa"
	"fmt"
)

// MinKeyBits is the smallest RSA modulus the protocol accepts for any
// party (creator, builder, station): the reference's keys are 2048 bits,
// and a smaller key lets whoever factors it read or sign for that party.
const MinKeyBits = 2048

// MaxConfigSize is the largest train_config.json phtoci reads or writes
// (1 MiB). post-run refuses an input whose rewritten config would exceed
// it, because the next station could not read that train.
const MaxConfigSize = 1 << 20

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
