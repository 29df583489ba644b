package protocol

import (
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/phtoci/phtoci/keys"
)

// Sink receives the files a step produces.
type Sink interface {
	// WriteFile stores one regular file. name is relative to /opt, e.g.
	// "pht_train/entrypoint.py" or "pht_results/sub/data.bin". size is the
	// exact number of bytes r yields, or -1 when not known in advance.
	// For large files r also implements io.WriterTo, which encrypts or
	// decrypts in the calling goroutine straight into the destination:
	// a sink that copies r with io.Copy gets that, without a pipe.
	WriteFile(name string, size int64, r io.Reader) error
}

// Station is a station's identity: its id on the route and private key.
type Station struct {
	ID  string
	Key *rsa.PrivateKey
}

// Status is where a train is on its route.
type Status struct {
	Done []int `json:"done"` // positions (route ordered by index) that have signed
	Next int   `json:"next"` // position of the next station, -1 when finished
	// RouteCommitment tells whether the config carries a route commitment
	// (which Verify then checked).
	RouteCommitment bool `json:"route_commitment"`
}

func mustHex(field, s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not hex", ErrInvalidConfig, field)
	}
	return b, nil
}

func pubKey(field, s string) (*rsa.PublicKey, error) {
	k, err := keys.ParsePublicKeyHex(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, field, err)
	}
	return k, nil
}

// preRunResult is what pre-run learned.
type preRunResult struct {
	Index  int  // position of the station in the route
	First  bool // no earlier results
	SymKey []byte
}

// stationEntry finds st on the route and checks its key.
func stationEntry(cfg *Config, st Station) (int, RouteEntry, error) {
	pos, err := cfg.StationIndex(st.ID)
	if err != nil {
		return -1, RouteEntry{}, err
	}
	e := cfg.sortedRoute()[pos]
	pub, err := pubKey(fmt.Sprintf("route[%d].rsa_public_key", pos), e.RSAPublicKey)
	if err != nil {
		return -1, e, err
	}
	if st.Key == nil || !keys.Equal(pub, &st.Key.PublicKey) {
		return -1, e, fmt.Errorf("station %s: %w: the key's public half (%s) differs from route[%d].rsa_public_key (%s)",
			st.ID, ErrWrongPrivateKey, fpOf(st.Key), pos, keys.Fingerprint(pub))
	}
	return pos, e, nil
}

func fpOf(k *rsa.PrivateKey) string {
	if k == nil {
		return "none"
	}
	return keys.Fingerprint(&k.PublicKey)
}
