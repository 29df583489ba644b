package protocol

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io/fs"
	"strings"
)

// Verify runs every check that needs no private key: user signature over
// hash, builder signature, the result signature with the last signing
// station's key, every chain signature, the recomputation of the last chain
// digest, the route commitment when the config carries one, and the
// structural rules (no false "first station", keys of at least
// MinKeyBits, no station twice on the route).
func Verify(cfg *Config) (*Status, error) {
	if err := checkParties(cfg); err != nil {
		return nil, err
	}
	hash, err := mustHex("hash", cfg.Hash)
	if err != nil {
		return nil, err
	}
	if len(hash) != sha512.Size {
		return nil, fmt.Errorf("%w: hash: %d bytes, expected 64", ErrInvalidConfig, len(hash))
	}
	userSig, _ := mustHex("signature", cfg.Signature)
	buildSig, _ := mustHex("build.signature", cfg.Build.Signature)
	creator, err := pubKey("creator.rsa_public_key", cfg.Creator.RSAPublicKey)
	if err != nil {
		return nil, err
	}
	builder, err := pubKey("build.rsa_public_key", cfg.Build.RSAPublicKey)
	if err != nil {
		return nil, err
	}
	if err := verifyUser(creator, hash, userSig); err != nil {
		return nil, fmt.Errorf("signature: %w with creator %s's key", ErrUserSignature, cfg.Creator.ID)
	}
	if err := verifyBuilder(builder, hash, userSig, buildSig); err != nil {
		return nil, fmt.Errorf("build.signature: %w", ErrBuilderSignature)
	}
	committed, err := CheckRouteCommitment(cfg)
	if err != nil {
		return nil, err
	}
	sid, _ := hex.DecodeString(cfg.SessionID)
	route := cfg.sortedRoute()
	st := &Status{Next: -1, RouteCommitment: committed}
	var digests [][]byte
	for i, r := range route {
		if r.Signature == nil {
			if st.Next < 0 {
				st.Next = i
			}
			continue
		}
		if st.Next >= 0 {
			return nil, fmt.Errorf("route[%d] (station %s): %w: signed after station %s, which has not", i, r.Station, ErrChainSignature, route[st.Next].Station)
		}
		pub, err := pubKey(fmt.Sprintf("route[%d].rsa_public_key", i), r.RSAPublicKey)
		if err != nil {
			return nil, err
		}
		d, _ := hex.DecodeString(r.Signature.Digest)
		sig, _ := hex.DecodeString(r.Signature.Signature)
		if err := verifyPSS(pub, d, sig); err != nil {
			return nil, fmt.Errorf("route[%d].signature (station %s): %w", i, r.Station, ErrChainSignature)
		}
		st.Done = append(st.Done, i)
		digests = append(digests, d)
	}
	if len(st.Done) == 0 {
		if cfg.ResultHash != nil || cfg.ResultSignature != nil {
			return nil, fmt.Errorf("result_hash: %w: set although no station has signed", ErrResultSignature)
		}
		return st, nil
	}
	last := route[st.Done[len(st.Done)-1]]
	if cfg.ResultHash == nil || cfg.ResultSignature == nil {
		return nil, fmt.Errorf("result_hash: %w: null although station %s has signed; a station after it is never first", ErrPreviousResultsChanged, last.Station)
	}
	rh, _ := hex.DecodeString(*cfg.ResultHash)
	rs, _ := hex.DecodeString(*cfg.ResultSignature)
	lastPub, _ := pubKey("", last.RSAPublicKey)
	if err := verifyPSS(lastPub, rh, rs); err != nil {
		return nil, fmt.Errorf("result_signature: %w with station %s's key", ErrResultSignature, last.Station)
	}
	n := len(digests) - 1
	if want := chainDigest(sid, digests[:n], rh); !bytes.Equal(want, digests[n]) {
		return nil, fmt.Errorf("route[%d].signature.digest (station %s): %w: does not match the digest recomputed from earlier digests and result_hash", st.Done[n], last.Station, ErrChainSignature)
	}
	return st, nil
}

// CheckFileNames compares the names of the regular files in train
// (/opt/pht_train) with file_list + query.json: names are visible without
// the key, so keyless verification uses it too.
func CheckFileNames(cfg *Config, train fs.FS) error { return checkNames(cfg, train) }

func checkNames(cfg *Config, train fs.FS) error {
	want := map[string]bool{}
	for _, n := range cfg.FileList {
		n = strings.TrimPrefix(n, "./")
		if n == "query.json" {
			return fmt.Errorf("file_list: %w: query.json must not be listed (it is hashed last)", ErrInvalidConfig)
		}
		want[n] = true
	}
	err := WalkFiles(train, func(name string, _ int64) error {
		if name == "query.json" {
			return nil
		}
		if !want[name] {
			return fmt.Errorf("pht_train/%s: %w: not in file_list", name, ErrUnsignedFile)
		}
		delete(want, name)
		return nil
	})
	if err != nil {
		return err
	}
	for _, n := range cfg.FileList {
		if want[strings.TrimPrefix(n, "./")] {
			return fmt.Errorf("pht_train/%s: %w: listed in file_list but missing", n, ErrImmutableChanged)
		}
	}
	return nil
}

// CheckTrain checks plaintext train files: exactly file_list + query.json,
// the immutable hash, and (via Verify's first steps) the user and builder
// signatures.
func CheckTrain(cfg *Config, trainPlain fs.FS) error {
	if err := checkNames(cfg, trainPlain); err != nil {
		return err
	}
	sid, _ := hex.DecodeString(cfg.SessionID)
	h, err := immutableHash(cfg.Creator.ID, cfg.FileList, sid, trainPlain)
	if err != nil {
		return err
	}
	if hex.EncodeToString(h) != strings.ToLower(cfg.Hash) {
		return fmt.Errorf("hash: %w: the train files' immutable hash does not match the config", ErrImmutableChanged)
	}
	_, err = Verify(cfg)
	return err
}
