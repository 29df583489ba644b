package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Config is /opt/train_config.json (vectors §10). Ids are strings, compared
// as written. Optional fields are nil when the file has null or omits them.
type Config struct {
	Source          Source
	Creator         Creator
	ProposalID      string
	ID              string          // "@id"
	Context         json.RawMessage // "@context"; nil is written as null
	SessionID       string          // hex of 64 bytes
	Route           []RouteEntry
	FileList        []string
	Hash            string
	Signature       string
	Build           BuildInfo
	ResultHash      *string
	ResultSignature *string
}

// Source names the master image the train was built on.
type Source struct {
	Type, Address, Tag string
	Branch             *string
}

// Creator is the researcher.
type Creator struct {
	ID                string
	RSAPublicKey      string
	PaillierPublicKey json.RawMessage // any JSON; nil is written as null
	EncryptedKey      *string
}

// RouteEntry is one station on the route.
type RouteEntry struct {
	Station      string
	EcoSystem    string
	RSAPublicKey string
	Index        int
	Signature    *ChainSignature
	EncryptedKey *string
}

// ChainSignature is route[i].signature (vectors §8).
type ChainSignature struct{ Digest, Signature string }

// BuildInfo is the builder's part.
type BuildInfo struct{ Signature, RSAPublicKey string }

// Known eco systems: the reference accepts only these.
var ecoSystems = map[string]bool{"tue": true, "padme": true}

// jsonID accepts a string or a number (the reference writes numeric-looking
// ids as numbers) and keeps it as the written text.
type jsonID string

func (j *jsonID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*j = jsonID(s)
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		*j = ""
		return nil
	}
	if _, err := strconv.ParseFloat(string(b), 64); err != nil {
		return fmt.Errorf("expected a string or number, found %s", b)
	}
	*j = jsonID(b)
	return nil
}

type rawConfig struct {
	Source *struct {
		Type    string  `json:"type"`
		Address string  `json:"address"`
		Tag     jsonID  `json:"tag"`
		Branch  *string `json:"branch"`
	} `json:"source"`
	Creator *struct {
		ID                jsonID          `json:"id"`
		RSAPublicKey      string          `json:"rsa_public_key"`
		PaillierPublicKey json.RawMessage `json:"paillier_public_key"`
		EncryptedKey      *string         `json:"encrypted_key"`
	} `json:"creator"`
	ProposalID jsonID          `json:"proposal_id"`
	ID         jsonID          `json:"@id"`
	Context    json.RawMessage `json:"@context"`
	SessionID  string          `json:"session_id"`
	Route      []struct {
		Station      jsonID `json:"station"`
		EcoSystem    string `json:"eco_system"`
		RSAPublicKey string `json:"rsa_public_key"`
		Index        *int   `json:"index"`
		Signature    *struct {
			Digest    string `json:"digest"`
			Signature string `json:"signature"`
		} `json:"signature"`
		EncryptedKey *string `json:"encrypted_key"`
	} `json:"route"`
	FileList []string `json:"file_list"`
	Hash     string   `json:"hash"`
	Sig      string   `json:"signature"`
	Build    *struct {
		Signature    string `json:"signature"`
		RSAPublicKey string `json:"rsa_public_key"`
	} `json:"build"`
	ResultHash      *string `json:"result_hash"`
	ResultSignature *string `json:"result_signature"`
}

func invalid(field, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, a...))
}

// ParseConfig reads a config in any valid JSON layout and validates it:
// hex fields are hex, the session id is 64 bytes, route indices are unique,
// eco_system is known. Errors name the field.
func ParseConfig(b []byte) (*Config, error) {
	var r rawConfig
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if r.Source == nil {
		return nil, invalid("source", "missing")
	}
	if r.Creator == nil {
		return nil, invalid("creator", "missing")
	}
	if r.Build == nil {
		return nil, invalid("build", "missing")
	}
	c := &Config{
		Source:     Source{Type: r.Source.Type, Address: r.Source.Address, Tag: string(r.Source.Tag), Branch: r.Source.Branch},
		Creator:    Creator{ID: string(r.Creator.ID), RSAPublicKey: r.Creator.RSAPublicKey, PaillierPublicKey: nullable(r.Creator.PaillierPublicKey), EncryptedKey: r.Creator.EncryptedKey},
		ProposalID: string(r.ProposalID), ID: string(r.ID), Context: nullable(r.Context),
		SessionID: r.SessionID, FileList: r.FileList, Hash: r.Hash, Signature: r.Sig,
		Build:      BuildInfo{Signature: r.Build.Signature, RSAPublicKey: r.Build.RSAPublicKey},
		ResultHash: r.ResultHash, ResultSignature: r.ResultSignature,
	}
	for field, raw := range map[string]json.RawMessage{"@context": c.Context, "creator.paillier_public_key": c.Creator.PaillierPublicKey} {
		if d := jsonDepth(raw); d > maxDepth {
			return nil, invalid(field, "nested %d levels deep, at most %d allowed", d, maxDepth)
		}
	}
	seen := map[int]bool{}
	for i, e := range r.Route {
		f := fmt.Sprintf("route[%d]", i)
		if e.Index == nil {
			return nil, invalid(f+".index", "missing")
		}
		if seen[*e.Index] {
			return nil, invalid(f+".index", "duplicate index %d", *e.Index)
		}
		seen[*e.Index] = true
		if !ecoSystems[e.EcoSystem] {
			return nil, invalid(f+".eco_system", "%q is not a known eco system (tue, padme)", e.EcoSystem)
		}
		re := RouteEntry{Station: string(e.Station), EcoSystem: e.EcoSystem, RSAPublicKey: e.RSAPublicKey, Index: *e.Index, EncryptedKey: e.EncryptedKey}
		if e.Signature != nil {
			re.Signature = &ChainSignature{Digest: e.Signature.Digest, Signature: e.Signature.Signature}
		}
		c.Route = append(c.Route, re)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := checkReadBack(c); err != nil {
		return nil, err
	}
	return c, nil
}

// maxDepth bounds the nesting of free-form values: the reference's indented
// layout grows with the square of the depth, so a deep value is a way to
// make every station write gigabytes.
const maxDepth = 32

// jsonDepth returns the deepest nesting of arrays and objects in valid JSON.
func jsonDepth(b []byte) int {
	depth, max, inStr, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '[' || c == '{':
			depth++
			if depth > max {
				max = depth
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return max
}

func nullable(m json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(m)) == 0 || bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
		return nil
	}
	return m
}

// lowerHex reports whether s is written with lower-case hex digits only
// (what the reference implementation writes).
func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'F' {
			return false
		}
	}
	return true
}

// validate checks the hex fields. Every hex field is lower-case, as the
// reference writes them: signatures cover the decoded bytes, so an
// upper-cased copy of a field would verify as the same train while
// comparing unequal as text (a station ledger, a central ledger).
func (c *Config) validate() error {
	check := func(field string, v string) error {
		if _, err := hex.DecodeString(v); err != nil {
			return invalid(field, "not hex")
		}
		if !lowerHex(v) {
			return invalid(field, "upper-case hex; the protocol writes lower-case hex only")
		}
		return nil
	}
	if err := check("session_id", c.SessionID); err != nil {
		return err
	}
	if n := len(c.SessionID) / 2; n != 64 {
		return invalid("session_id", "%d bytes, expected 64", n)
	}
	checkp := func(field string, v *string) error {
		if v == nil {
			return nil
		}
		return check(field, *v)
	}
	errs := []error{
		check("creator.rsa_public_key", c.Creator.RSAPublicKey), checkp("creator.encrypted_key", c.Creator.EncryptedKey),
		check("hash", c.Hash), check("signature", c.Signature),
		check("build.signature", c.Build.Signature), check("build.rsa_public_key", c.Build.RSAPublicKey),
		checkp("result_hash", c.ResultHash), checkp("result_signature", c.ResultSignature),
	}
	for i, r := range c.Route {
		f := fmt.Sprintf("route[%d].", i)
		errs = append(errs, check(f+"rsa_public_key", r.RSAPublicKey), checkp(f+"encrypted_key", r.EncryptedKey))
		if r.Signature != nil {
			errs = append(errs, check(f+"signature.digest", r.Signature.Digest), check(f+"signature.signature", r.Signature.Signature))
		}
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Clone returns a deep copy.
func (c *Config) Clone() *Config {
	d := *c
	cp := func(s *string) *string {
		if s == nil {
			return nil
		}
		v := *s
		return &v
	}
	d.Source.Branch = cp(c.Source.Branch)
	d.Creator.EncryptedKey = cp(c.Creator.EncryptedKey)
	d.Creator.PaillierPublicKey = append(json.RawMessage(nil), c.Creator.PaillierPublicKey...)
	d.Context = append(json.RawMessage(nil), c.Context...)
	d.ResultHash, d.ResultSignature = cp(c.ResultHash), cp(c.ResultSignature)
	d.FileList = append([]string(nil), c.FileList...)
	d.Route = make([]RouteEntry, len(c.Route))
	for i, r := range c.Route {
		r.EncryptedKey = cp(r.EncryptedKey)
		if r.Signature != nil {
			s := *r.Signature
			r.Signature = &s
		}
		d.Route[i] = r
	}
	if len(c.Creator.PaillierPublicKey) == 0 {
		d.Creator.PaillierPublicKey = nil
	}
	if len(c.Context) == 0 {
		d.Context = nil
	}
	return &d
}

// SortedRoute returns a copy of the route ordered by index: positions in
// it are the "route indices" of Status.
func (c *Config) SortedRoute() []RouteEntry { return c.sortedRoute() }

func (c *Config) sortedRoute() []RouteEntry {
	r := append([]RouteEntry(nil), c.Route...)
	sort.SliceStable(r, func(i, j int) bool { return r[i].Index < r[j].Index })
	return r
}

// StationIndex returns the position of station id in the route ordered by
// index.
func (c *Config) StationIndex(id string) (int, error) {
	for i, r := range c.sortedRoute() {
		if r.Station == id {
			return i, nil
		}
	}
	var ids []string
	for _, r := range c.sortedRoute() {
		ids = append(ids, r.Station)
	}
	return -1, fmt.Errorf("station %q: %w (route: %s)", id, ErrStationNotOnRoute, strings.Join(ids, ", "))
}

// Encode writes the config exactly as the reference does (vectors §10):
// fixed key order, 2-space indent, nulls, \u escapes, no trailing newline.
func (c *Config) Encode() ([]byte, error) { return c.encode(0) }

// errOverLimit stops an encoding that outgrew its limit.
var errOverLimit = errors.New("encoded config over the limit")

// encode is Encode; with limit > 0 it stops with errOverLimit as soon as
// the output is longer than limit (re-indenting a free-form value can
// multiply its size).
func (c *Config) encode(limit int) ([]byte, error) {
	e := enc{limit: limit}
	e.open('{')
	e.key("source")
	e.open('{')
	e.key("type")
	e.str(c.Source.Type)
	e.key("address")
	e.str(c.Source.Address)
	e.key("tag")
	e.str(c.Source.Tag)
	e.key("branch")
	e.strp(c.Source.Branch)
	e.close('}')
	e.key("creator")
	e.open('{')
	e.key("id")
	e.str(c.Creator.ID)
	e.key("rsa_public_key")
	e.str(c.Creator.RSAPublicKey)
	e.key("paillier_public_key")
	if err := e.raw(c.Creator.PaillierPublicKey); err != nil {
		return nil, fmt.Errorf("creator.paillier_public_key: %w", err)
	}
	e.key("encrypted_key")
	e.strp(c.Creator.EncryptedKey)
	e.close('}')
	e.key("proposal_id")
	e.str(c.ProposalID)
	e.key("@id")
	e.str(c.ID)
	e.key("@context")
	if err := e.raw(c.Context); err != nil {
		return nil, fmt.Errorf("@context: %w", err)
	}
	e.key("session_id")
	e.str(c.SessionID)
	e.key("route")
	if len(c.Route) == 0 {
		e.b.WriteString("[]")
	} else {
		e.open('[')
		for _, r := range c.Route {
			e.item()
			e.open('{')
			e.key("station")
			e.str(r.Station)
			e.key("eco_system")
			e.str(r.EcoSystem)
			e.key("rsa_public_key")
			e.str(r.RSAPublicKey)
			e.key("index")
			e.b.WriteString(strconv.Itoa(r.Index))
			e.key("signature")
			if r.Signature == nil {
				e.b.WriteString("null")
			} else {
				e.open('{')
				e.key("digest")
				e.str(r.Signature.Digest)
				e.key("signature")
				e.str(r.Signature.Signature)
				e.close('}')
			}
			e.key("encrypted_key")
			e.strp(r.EncryptedKey)
			e.close('}')
		}
		e.close(']')
	}
	e.key("file_list")
	if len(c.FileList) == 0 {
		e.b.WriteString("[]")
	} else {
		e.open('[')
		for _, f := range c.FileList {
			e.item()
			e.str(f)
		}
		e.close(']')
	}
	e.key("hash")
	e.str(c.Hash)
	e.key("signature")
	e.str(c.Signature)
	e.key("build")
	e.open('{')
	e.key("signature")
	e.str(c.Build.Signature)
	e.key("rsa_public_key")
	e.str(c.Build.RSAPublicKey)
	e.close('}')
	e.key("result_hash")
	e.strp(c.ResultHash)
	e.key("result_signature")
	e.strp(c.ResultSignature)
	e.close('}')
	if e.over() {
		return nil, errOverLimit
	}
	return e.b.Bytes(), nil
}

// enc writes JSON the way Python's json.dumps(indent=2) does: hand-written
// because encoding/json cannot keep key order for raw values, escapes <>&
// and never escapes non-ASCII.
type enc struct {
	b     bytes.Buffer
	depth int
	first []bool
	limit int    // > 0: raw values stop with errOverLimit past it
	src   []byte // the free-form value raw is writing
}

func (e *enc) over() bool { return e.limit > 0 && e.b.Len() > e.limit }

func (e *enc) newline() {
	e.b.WriteByte('\n')
	for i := 0; i < e.depth; i++ {
		e.b.WriteString("  ")
	}
}

func (e *enc) open(c byte) {
	e.b.WriteByte(c)
	e.depth++
	e.first = append(e.first, true)
}

func (e *enc) close(c byte) {
	e.depth--
	e.first = e.first[:len(e.first)-1]
	e.newline()
	e.b.WriteByte(c)
}

func (e *enc) item() {
	if !e.first[len(e.first)-1] {
		e.b.WriteByte(',')
	}
	e.first[len(e.first)-1] = false
	e.newline()
}

func (e *enc) key(k string) {
	e.item()
	e.str(k)
	e.b.WriteString(": ")
}

func (e *enc) strp(s *string) {
	if s == nil {
		e.b.WriteString("null")
		return
	}
	e.str(*s)
}

func (e *enc) str(s string) {
	e.b.WriteByte('"')
	for _, r := range s {
		e.char(r)
	}
	e.b.WriteByte('"')
}

// char writes one character of a string as json.dumps does (ensure_ascii).
// A lone surrogate (a rune in 0xd800–0xdfff, see literalRunes) is written
// as its \u escape, as Python keeps it.
func (e *enc) char(r rune) {
	switch {
	case r == '"':
		e.b.WriteString(`\"`)
	case r == '\\':
		e.b.WriteString(`\\`)
	case r == '\n':
		e.b.WriteString(`\n`)
	case r == '\r':
		e.b.WriteString(`\r`)
	case r == '\t':
		e.b.WriteString(`\t`)
	case r == '\b':
		e.b.WriteString(`\b`)
	case r == '\f':
		e.b.WriteString(`\f`)
	case r < 0x20 || (r >= 0x7f && r < 0x10000): // DEL and lone surrogates too
		fmt.Fprintf(&e.b, `\u%04x`, r)
	case r >= 0x10000:
		r -= 0x10000
		fmt.Fprintf(&e.b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
	default:
		e.b.WriteRune(r)
	}
}

// strLit writes a string of a free-form value from its literal as
// received (lit, with the separators before it), so that escapes of lone
// surrogates, which Python reads and writes back but Go's decoder turns
// into U+FFFD, stay as they were; decoded is the decoder's reading.
func (e *enc) strLit(lit []byte, decoded string) {
	lit = bytes.TrimLeft(lit, " \t\r\n,:")
	if !bytes.Contains(lit, []byte(`\u`)) || len(lit) < 2 || lit[0] != '"' {
		e.str(decoded)
		return
	}
	e.b.WriteByte('"')
	for _, r := range literalRunes(lit[1 : len(lit)-1]) {
		e.char(r)
	}
	e.b.WriteByte('"')
}

// literalRunes decodes the inside of a valid JSON string literal as
// Python does: a \u escape of a surrogate that is not half of a pair stays
// a lone surrogate rune; invalid UTF-8 becomes U+FFFD.
func literalRunes(lit []byte) []rune {
	var rs []rune
	hex4 := func(b []byte) rune { v, _ := strconv.ParseUint(string(b), 16, 16); return rune(v) }
	for i := 0; i < len(lit); {
		if lit[i] != '\\' {
			r, n := utf8.DecodeRune(lit[i:])
			rs = append(rs, r)
			i += n
			continue
		}
		c := lit[i+1]
		i += 2
		switch c {
		case 'u':
			r := hex4(lit[i : i+4])
			i += 4
			if r >= 0xd800 && r < 0xdc00 && i+6 <= len(lit) && lit[i] == '\\' && lit[i+1] == 'u' {
				if lo := hex4(lit[i+2 : i+6]); lo >= 0xdc00 && lo < 0xe000 {
					r = utf16.DecodeRune(r, lo)
					i += 6
				}
			}
			rs = append(rs, r)
		case 'b':
			rs = append(rs, '\b')
		case 'f':
			rs = append(rs, '\f')
		case 'n':
			rs = append(rs, '\n')
		case 'r':
			rs = append(rs, '\r')
		case 't':
			rs = append(rs, '\t')
		default: // " \\ /
			rs = append(rs, rune(c))
		}
	}
	return rs
}

// raw re-emits arbitrary JSON (the @context and Paillier key) in Python's
// layout, keeping key order.
func (e *enc) raw(m json.RawMessage) error {
	if len(m) == 0 {
		e.b.WriteString("null")
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(m))
	d.UseNumber()
	e.src = m
	if err := e.value(d); err != nil {
		return err
	}
	return nil
}

func (e *enc) value(d *json.Decoder) error {
	if e.over() {
		return errOverLimit
	}
	start := d.InputOffset()
	t, err := d.Token()
	if err != nil {
		return err
	}
	switch v := t.(type) {
	case json.Delim:
		closing := byte('}')
		if v == '[' {
			closing = ']'
		}
		if !d.More() {
			d.Token()
			e.b.WriteByte(byte(v))
			e.b.WriteByte(closing)
			return nil
		}
		e.open(byte(v))
		for d.More() {
			if v == '{' {
				kstart := d.InputOffset()
				k, err := d.Token()
				if err != nil {
					return err
				}
				e.item()
				e.strLit(e.src[kstart:d.InputOffset()], k.(string))
				e.b.WriteString(": ")
			} else {
				e.item()
			}
			if err := e.value(d); err != nil {
				return err
			}
		}
		if _, err := d.Token(); err != nil {
			return err
		}
		e.close(closing)
	case string:
		e.strLit(e.src[start:d.InputOffset()], v)
	case json.Number:
		e.b.WriteString(v.String())
	case bool:
		e.b.WriteString(strconv.FormatBool(v))
	case nil:
		e.b.WriteString("null")
	}
	return nil
}
