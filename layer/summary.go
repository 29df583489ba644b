package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// SummaryCache stores layer summaries: what a layer holds under the
// resolved paths (entries, whiteouts, opaque markers, the SHA-256 of each
// regular file, whether it touches anything outside them), so that a later
// Resolve need not read the layer again. Keys are file-name safe and name
// the layer's compressed blob digest and the prefixes; values are opaque
// and self-validating (Resolve ignores an entry that is damaged or belongs
// to another digest), so a store may lose, truncate or mix them up without
// harm. Implementations must be safe for concurrent use; Put may drop
// entries (a full or read-only store).
type SummaryCache interface {
	Get(key string) ([]byte, bool)
	Put(key string, value []byte)
}

// maxRecords bounds the entries under the paths a summary records (memory
// while resolving, and the cache's size): a layer with more is not
// summarised.
const maxRecords = 4096

// summaryVersion changes with the summary's encoding.
const summaryVersion = "phtoci-layer-summary/1"

// summary is what a layer holds under the prefixes.
type summary struct {
	Version  string   `json:"version"`
	Digest   string   `json:"digest"` // the compressed blob's
	DiffID   string   `json:"diffID"` // verified while it was read
	Prefixes []string `json:"prefixes"`
	Entries  int64    `json:"entries"` // all tar entries, for the limit
	Outside  []string `json:"outside,omitempty"`
	Touches  bool     `json:"touchesOutside,omitempty"`
	Records  []record `json:"records,omitempty"`
}

// record is a tar entry under the prefixes or at their ancestors, in tar
// order: enough to replay it through layerReader.entry.
type record struct {
	Name     string `json:"n"`
	Type     byte   `json:"t"`
	Size     int64  `json:"s,omitempty"`
	Linkname string `json:"l,omitempty"`
	SHA256   string `json:"h,omitempty"` // regular files
}

// summaryKey is the cache key of digest's summary for prefixes.
func summaryKey(digest v1.Hash, prefixes []string) string {
	ph := sha256.Sum256([]byte(strings.Join(prefixes, "\x00")))
	return digest.Algorithm + "-" + digest.Hex + "-" + hex.EncodeToString(ph[:8])
}

// encodeSummary is the value stored: a header line with the version and
// the SHA-256 of the JSON body, then the body.
func encodeSummary(s *summary) []byte {
	body, err := json.Marshal(s)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(body)
	var b bytes.Buffer
	b.WriteString(summaryVersion + " " + hex.EncodeToString(sum[:]) + "\n")
	b.Write(body)
	return b.Bytes()
}

// errSummary is why a cached summary is not used.
var errSummary = errors.New("layer summary not usable")

// decodeSummary checks a stored value against what it must describe.
func decodeSummary(data []byte, digest, diffID v1.Hash, prefixes []string) (*summary, error) {
	head, body, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		return nil, errSummary
	}
	ver, hexSum, ok := strings.Cut(string(head), " ")
	if !ok || ver != summaryVersion {
		return nil, errSummary
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != hexSum {
		return nil, errSummary
	}
	var s summary
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, errSummary
	}
	if s.Version != summaryVersion || s.Digest != digest.String() || s.DiffID != diffID.String() ||
		strings.Join(s.Prefixes, "\x00") != strings.Join(prefixes, "\x00") {
		return nil, errSummary
	}
	return &s, nil
}

// recordable tells whether entry would do more with hdr than note it as
// outside the prefixes: those entries are what a summary replays.
func recordable(hdr *tar.Header, prefixes []string) bool {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return false
	}
	name, err := cleanEntryName(hdr.Name)
	if err != nil || name == "" {
		return false // an error stops the read; the root is skipped
	}
	i := strings.LastIndexByte(name, '/')
	dir, base := "", name
	if i >= 0 {
		dir, base = name[:i], name[i+1:]
	}
	switch {
	case base == opaqueName:
		return relate(dir, prefixes) != outside
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		return false
	case strings.HasPrefix(base, whiteoutPrefix):
		target := base[len(whiteoutPrefix):]
		if dir != "" {
			target = dir + "/" + target
		}
		return relate(target, prefixes) != outside
	}
	return relate(name, prefixes) != outside
}

// errNeedBlob stops a replay: the layer holds a file Resolve keeps (or
// a file whose recorded hash is not one).
var errNeedBlob = errors.New("layer holds a file that is kept")

// replay applies a summary as if the layer had been read.
func (lr *layerReader) replay(s *summary) error {
	lr.replaying = true
	defer func() { lr.replaying = false }()
	if max := lr.o.limits.MaxEntries; s.Entries > max {
		lr.entries = s.Entries - 1
		return lr.countEntry()
	}
	lr.entries = s.Entries
	for i := range s.Records {
		rec := &s.Records[i]
		hdr := &tar.Header{Name: rec.Name, Typeflag: rec.Type, Size: rec.Size, Linkname: rec.Linkname}
		lr.rec = rec
		if err := lr.entry(nil, hdr); err != nil {
			return err
		}
	}
	lr.rec = nil
	lr.info.Outside = append([]string(nil), s.Outside...)
	lr.info.TouchesOutside = s.Touches
	return nil
}

// eofWatch notes whether a blob was read to its end.
type eofWatch struct {
	io.ReadCloser
	eof bool
}

func (w *eofWatch) Read(p []byte) (int, error) {
	n, err := w.ReadCloser.Read(p)
	if err == io.EOF {
		w.eof = true
	}
	return n, err
}

// verifies tells whether rc checks its digest at its end.
func verifies(rc io.Reader) bool {
	dv, ok := rc.(DigestVerifier)
	return ok && dv.VerifiesDigest()
}
