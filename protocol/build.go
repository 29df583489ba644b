package protocol

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"

	"github.com/phtoci/phtoci/keys"
)

// BuildOptions describe a new train.
type BuildOptions struct {
	CreatorID     string
	CreatorPublic *rsa.PublicKey
	// UserKey signs the immutable hash here; or UserSignature, made
	// elsewhere, is verified against CreatorPublic and used.
	UserKey       *rsa.PrivateKey
	UserSignature []byte
	BuilderKey    *rsa.PrivateKey
	Route         []RouteStation
	ProposalID    string
	ID            string
	Source        Source
	SessionID     []byte // nil: 64 random bytes
}

// RouteStation is one station of a new train's route.
type RouteStation struct {
	ID, EcoSystem string
	PublicKey     *rsa.PublicKey
}

// Build makes a train the way the central builder does: file_list is every
// file of trainPlain except query.json, in walk order; hash, user and builder
// signatures; the builder's route commitment in @context; a fresh key
// wrapped for the first station only. The encrypted
// files go to out as "pht_train/…" in walk order.
func Build(opts BuildOptions, trainPlain fs.FS, out Sink) (*Config, error) {
	if opts.CreatorID == "" || opts.BuilderKey == nil || len(opts.Route) == 0 {
		return nil, fmt.Errorf("%w: creator id, builder key and a route are required", ErrBuild)
	}
	if opts.CreatorPublic == nil && opts.UserKey != nil {
		opts.CreatorPublic = &opts.UserKey.PublicKey
	}
	if opts.CreatorPublic == nil {
		return nil, fmt.Errorf("%w: the creator's public key is required", ErrBuild)
	}
	if err := checkBuildParties(opts); err != nil {
		return nil, err
	}
	sid := opts.SessionID
	if sid == nil {
		sid = make([]byte, 64)
		if _, err := io.ReadFull(rand.Reader, sid); err != nil {
			return nil, err
		}
	}
	if len(sid) != 64 {
		return nil, fmt.Errorf("%w: session id is %d bytes, expected 64", ErrBuild, len(sid))
	}
	var files []string
	hasQuery := false
	if err := WalkFiles(trainPlain, func(name string, _ int64) error {
		if name == "query.json" {
			hasQuery = true
		} else {
			files = append(files, name)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("train files: %w", err)
	}
	if len(files) == 0 && !hasQuery {
		return nil, fmt.Errorf("%w: no train files", ErrBuild)
	}
	hash, err := immutableHash(opts.CreatorID, files, sid, trainPlain)
	if err != nil {
		return nil, err
	}
	userSig := opts.UserSignature
	if opts.UserKey != nil {
		if !keys.Equal(&opts.UserKey.PublicKey, opts.CreatorPublic) {
			return nil, fmt.Errorf("%w: the user key does not belong to the creator's public key", ErrBuild)
		}
		if userSig, err = signUser(opts.UserKey, hash); err != nil {
			return nil, err
		}
	} else if err := verifyUser(opts.CreatorPublic, hash, userSig); err != nil {
		return nil, fmt.Errorf("user signature: %w over hash %x", ErrUserSignature, hash)
	}
	buildSig, err := signBuilder(opts.BuilderKey, hash, userSig)
	if err != nil {
		return nil, err
	}
	key, err := newSymmetricKey()
	if err != nil {
		return nil, err
	}
	creatorHex, err := keys.EncodePublicKeyHex(opts.CreatorPublic)
	if err != nil {
		return nil, err
	}
	builderHex, err := keys.EncodePublicKeyHex(&opts.BuilderKey.PublicKey)
	if err != nil {
		return nil, err
	}
	cfg := &Config{
		Source:     opts.Source,
		Creator:    Creator{ID: opts.CreatorID, RSAPublicKey: creatorHex},
		ProposalID: opts.ProposalID, ID: opts.ID,
		SessionID: hex.EncodeToString(sid), FileList: files,
		Hash: hex.EncodeToString(hash), Signature: hex.EncodeToString(userSig),
		Build: BuildInfo{Signature: hex.EncodeToString(buildSig), RSAPublicKey: builderHex},
	}
	if cfg.ID == "" {
		cfg.ID = hex.EncodeToString(sid[:16])
	}
	for i, s := range opts.Route {
		eco := s.EcoSystem
		if eco == "" {
			eco = "tue"
		}
		if !ecoSystems[eco] {
			return nil, fmt.Errorf("%w: station %s: eco system %q is not tue or padme", ErrBuild, s.ID, eco)
		}
		h, err := keys.EncodePublicKeyHex(s.PublicKey)
		if err != nil {
			return nil, err
		}
		cfg.Route = append(cfg.Route, RouteEntry{Station: s.ID, EcoSystem: eco, RSAPublicKey: h, Index: i})
	}
	if err := commitRoute(cfg, opts.BuilderKey); err != nil {
		return nil, err
	}
	if err := wrapFor(&cfg.Route[0].EncryptedKey, cfg.Route[0].RSAPublicKey, key, "route[0]"); err != nil {
		return nil, err
	}
	if err := encryptTree(trainPlain, "pht_train", key, out); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Decrypt is the researcher's end of the route: it verifies everything
// (Verify, the creator key, the train files' immutable hash and the results
// hash), writing the plaintext results (and the train files when withTrain)
// to out. userKeyFile is /opt/user_sym_key.key (nil: creator.encrypted_key).
// On error, discard out.
func Decrypt(cfg *Config, userKey *rsa.PrivateKey, userKeyFile []byte, train, results fs.FS, out Sink, withTrain bool) error {
	status, err := Verify(cfg)
	if err != nil {
		return err
	}
	creator, err := pubKey("creator.rsa_public_key", cfg.Creator.RSAPublicKey)
	if err != nil {
		return err
	}
	if userKey == nil || !keys.Equal(creator, &userKey.PublicKey) {
		return fmt.Errorf("creator %s: %w: the key's public half (%s) differs from creator.rsa_public_key (%s)", cfg.Creator.ID, ErrWrongPrivateKey, fpOf(userKey), keys.Fingerprint(creator))
	}
	if cfg.ResultHash == nil && len(status.Done) == 0 {
		return fmt.Errorf("%w: no station on the route has run this train (%d station(s) to go)", ErrNothingToDecrypt, len(cfg.Route))
	}
	if cfg.ResultHash == nil {
		return fmt.Errorf("result_hash: %w: null, but %d station(s) signed", ErrPreviousResultsChanged, len(status.Done))
	}
	wrapped := userKeyFile
	if wrapped == nil {
		if cfg.Creator.EncryptedKey == nil {
			return fmt.Errorf("creator.encrypted_key: %w: null and no /opt/user_sym_key.key", ErrDecryption)
		}
		if wrapped, err = mustHex("creator.encrypted_key", *cfg.Creator.EncryptedKey); err != nil {
			return err
		}
	}
	key, err := unwrapKey(userKey, wrapped)
	if err != nil {
		return fmt.Errorf("user_sym_key.key: %w", err)
	}
	var trainOut Sink
	if withTrain {
		trainOut = out
	}
	if err := decryptTrain(cfg, train, key, trainOut); err != nil {
		return err
	}
	return decryptResults(cfg, results, key, out)
}
