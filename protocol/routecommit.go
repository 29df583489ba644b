package protocol

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/phtoci/phtoci/keys"
)

// The route commitment (testdata/route_commitment/README.md): the builder
// signs the ordered route (index, station id, public key of every entry)
// bound to the immutable hash, and the signature travels in @context,
// which the reference's config model carries as an opaque object and
// writes back. The original protocol signs no route.
const (
	// RouteCommitmentKey is the member of @context that holds the
	// commitment.
	RouteCommitmentKey = "phtoci_route_commitment"
	// routeCommitmentVersion is the only version there is.
	routeCommitmentVersion = 1
	// routeCommitmentTag starts the signed bytes (domain separation: no
	// other signature of the protocol starts with it).
	routeCommitmentTag = "phtoci route commitment v1\x00"
)

// routeCommitment is the value of @context.phtoci_route_commitment.
// Route is what the builder committed to, in words (index, station id and
// key fingerprint), so that a mismatch can be named; Signature alone
// decides.
type routeCommitment struct {
	Version   int                    `json:"version"`
	Route     []routeCommitmentEntry `json:"route"`
	Signature string                 `json:"signature"`
}

type routeCommitmentEntry struct {
	Index   int    `json:"index"`
	Station string `json:"station"`
	Key     string `json:"key"` // keys.Fingerprint
}

// routeCommitmentMessage returns the bytes the builder signs: the tag,
// the 64 bytes of hash, the number of route entries (uint32, big endian),
// then per entry in index order its index (int64, big endian), station id
// (uint32 length, UTF-8 bytes) and public key (uint32 length, PKIX DER).
func routeCommitmentMessage(cfg *Config) ([]byte, error) {
	hash, err := mustHex("hash", cfg.Hash)
	if err != nil {
		return nil, err
	}
	if len(hash) != sha512.Size {
		return nil, fmt.Errorf("%w: hash: %d bytes, expected %d", ErrInvalidConfig, len(hash), sha512.Size)
	}
	var b bytes.Buffer
	b.WriteString(routeCommitmentTag)
	b.Write(hash)
	route := cfg.sortedRoute()
	b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(route))))
	for i, r := range route {
		k, err := pubKey(fmt.Sprintf("route[%d].rsa_public_key", i), r.RSAPublicKey)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("%w: route[%d].rsa_public_key: %v", ErrInvalidConfig, i, err)
		}
		b.Write(binary.BigEndian.AppendUint64(nil, uint64(int64(r.Index))))
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(r.Station))))
		b.WriteString(r.Station)
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(der))))
		b.Write(der)
	}
	return b.Bytes(), nil
}

// commitRoute signs cfg's route and hash with the builder's key and puts
// the commitment into @context (an object; other members stay as they
// are).
func commitRoute(cfg *Config, builder *rsa.PrivateKey) error {
	msg, err := routeCommitmentMessage(cfg)
	if err != nil {
		return err
	}
	d := sha512.Sum512(msg)
	sig, err := rsa.SignPKCS1v15(nil, builder, crypto.SHA512, d[:])
	if err != nil {
		return err
	}
	rc := routeCommitment{Version: routeCommitmentVersion, Route: []routeCommitmentEntry{}, Signature: hex.EncodeToString(sig)}
	for i, r := range cfg.sortedRoute() {
		k, err := pubKey(fmt.Sprintf("route[%d].rsa_public_key", i), r.RSAPublicKey)
		if err != nil {
			return err
		}
		rc.Route = append(rc.Route, routeCommitmentEntry{Index: r.Index, Station: r.Station, Key: keys.Fingerprint(k)})
	}
	val, err := json.Marshal(rc)
	if err != nil {
		return err
	}
	members, err := contextMembers(cfg.Context)
	if err != nil {
		return err
	}
	if members == nil {
		return fmt.Errorf("%w: @context is not an object; the route commitment cannot be added", ErrBuild)
	}
	var out bytes.Buffer
	out.WriteByte('{')
	n := 0
	for _, m := range members {
		if m.key == RouteCommitmentKey {
			continue
		}
		if n > 0 {
			out.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		out.Write(k)
		out.WriteByte(':')
		out.Write(m.raw)
		n++
	}
	if n > 0 {
		out.WriteByte(',')
	}
	k, _ := json.Marshal(RouteCommitmentKey)
	out.Write(k)
	out.WriteByte(':')
	out.Write(val)
	out.WriteByte('}')
	cfg.Context = out.Bytes()
	return nil
}

type member struct {
	key string
	raw json.RawMessage
}

// contextMembers returns the members of @context in order: empty for a
// null @context, nil (no error) when it is not an object.
func contextMembers(ctx json.RawMessage) ([]member, error) {
	if len(ctx) == 0 {
		return []member{}, nil
	}
	d := json.NewDecoder(bytes.NewReader(ctx))
	t, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: @context: %v", ErrInvalidConfig, err)
	}
	if t != json.Delim('{') {
		return nil, nil
	}
	ms := []member{}
	for d.More() {
		kt, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: @context: %v", ErrInvalidConfig, err)
		}
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: @context: %v", ErrInvalidConfig, err)
		}
		ms = append(ms, member{key: kt.(string), raw: raw})
	}
	return ms, nil
}

// commitmentField names the commitment in messages.
const commitmentField = "@context." + RouteCommitmentKey

// CheckRouteCommitment checks the route commitment when cfg carries one
// and tells whether it does. The commitment must be by the config's
// builder key (build.rsa_public_key) and match the route exactly: a
// station added, removed, moved or given another key since the build is
// ErrRouteCommitment, naming what differs. Verify calls it; a trust store
// that relaxes its rules for committed routes calls it too.
func CheckRouteCommitment(cfg *Config) (bool, error) {
	members, err := contextMembers(cfg.Context)
	if err != nil {
		return false, err
	}
	var raw json.RawMessage
	for _, m := range members {
		if m.key == RouteCommitmentKey {
			raw = m.raw // the last one, as a JSON reader keeps it
		}
	}
	if raw == nil {
		return false, nil
	}
	fail := func(format string, a ...any) (bool, error) {
		return true, fmt.Errorf("route_commitment (%s): %w: %s", commitmentField, ErrRouteCommitment, fmt.Sprintf(format, a...))
	}
	var rc routeCommitment
	if err := json.Unmarshal(raw, &rc); err != nil {
		return fail("not a route commitment: %v", err)
	}
	if rc.Version != routeCommitmentVersion {
		return fail("version %d, only version %d is known", rc.Version, routeCommitmentVersion)
	}
	sig, err := hex.DecodeString(rc.Signature)
	if err != nil || len(sig) == 0 {
		return fail("signature is not hex")
	}
	if diff := routeDiff(cfg, rc.Route); diff != "" {
		return fail("%s", diff)
	}
	msg, err := routeCommitmentMessage(cfg)
	if err != nil {
		return true, err
	}
	builder, err := pubKey("build.rsa_public_key", cfg.Build.RSAPublicKey)
	if err != nil {
		return true, err
	}
	d := sha512.Sum512(msg)
	if err := rsa.VerifyPKCS1v15(builder, crypto.SHA512, d[:], sig); err != nil {
		return fail("the signature does not verify with build.rsa_public_key (%s): the route, the hash or the commitment changed after the build", keys.Fingerprint(builder))
	}
	return true, nil
}

// routeDiff names how cfg's route differs from the committed one (""
// when it does not): stations added, removed or re-keyed; else the order;
// else the index values.
func routeDiff(cfg *Config, committed []routeCommitmentEntry) string {
	route := cfg.sortedRoute()
	inCommit := map[string]routeCommitmentEntry{}
	var want []string
	for _, c := range committed {
		inCommit[c.Station] = c
		want = append(want, c.Station)
	}
	inRoute := map[string]bool{}
	var diffs, got, indices []string
	for i, r := range route {
		inRoute[r.Station] = true
		got = append(got, r.Station)
		c, ok := inCommit[r.Station]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("station %q (route[%d]) was added after the build", r.Station, i))
			continue
		}
		fp := "unreadable"
		if k, err := keys.ParsePublicKeyHex(r.RSAPublicKey); err == nil {
			fp = keys.Fingerprint(k)
		}
		if fp != c.Key {
			diffs = append(diffs, fmt.Sprintf("station %q (route[%d]) has key %s, the builder committed to %s", r.Station, i, fp, c.Key))
		}
		if r.Index != c.Index {
			indices = append(indices, fmt.Sprintf("station %q has index %d, the builder committed to %d", r.Station, r.Index, c.Index))
		}
	}
	for i, c := range committed {
		if !inRoute[c.Station] {
			diffs = append(diffs, fmt.Sprintf("station %q (committed route[%d]) was removed", c.Station, i))
		}
	}
	switch {
	case len(diffs) > 0:
	case strings.Join(got, "\x00") != strings.Join(want, "\x00"):
		diffs = append(diffs, fmt.Sprintf("the route was reordered: %s, the builder committed to %s", quoteList(got), quoteList(want)))
	default:
		diffs = indices
	}
	return strings.Join(diffs, "; ")
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}
