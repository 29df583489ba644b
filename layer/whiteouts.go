// whiteouts.go holds what upper layers hide in lower ones (whiteouts, opaque directories) and how a path relates to the prefixes.

package layer

import (
	"strings"
)

// upperKind is what the layers above have at exactly one path.
type upperKind uint8

const (
	upperNone  upperKind = iota
	upperDir             // a directory, explicit or implied: lower directories merge, lower files are hidden
	upperOther           // a file, whiteout or other non-directory: everything lower at and below is hidden
)

// hides is the union of what the layers read so far hide in lower layers.
type hides struct {
	exact map[string]upperKind
	below map[string]bool // everything strictly below these paths is hidden
}

func newHides() hides { return hides{exact: map[string]upperKind{}, below: map[string]bool{}} }

// hidden reports whether an entry at p of the given kind (dir or not) in a
// lower layer is hidden by the layers above.
func (h hides) hidden(p string, dir bool) bool {
	switch h.exact[p] {
	case upperOther:
		return true
	case upperDir:
		if !dir {
			return true
		}
	}
	return h.coveredBelow(p)
}

// coveredBelow reports whether a strict ancestor of p hides everything
// below it.
func (h hides) coveredBelow(p string) bool {
	if h.below[""] {
		return true
	}
	for a := p; ; {
		i := strings.LastIndexByte(a, '/')
		if i < 0 {
			return false
		}
		a = a[:i]
		// A non-directory hides everything below it too (files are
		// recorded in exact only: a million results are one map entry
		// each, not two).
		if h.below[a] || h.exact[a] == upperOther {
			return true
		}
	}
}

// union is h merged with o, merging the smaller into the larger (the
// first layer read holds most entries: it is not copied).
func (h hides) union(o hides) hides {
	if len(o.exact)+len(o.below) > len(h.exact)+len(h.below) {
		h, o = o, h
	}
	h.merge(o)
	return h
}

func (h hides) merge(o hides) {
	for k, v := range o.exact {
		if v > h.exact[k] {
			h.exact[k] = v
		}
	}
	for k := range o.below {
		h.below[k] = true
	}
}

// settled reports whether lower layers cannot change the merged view at
// or below q.
func (h hides) settled(q string) bool {
	return h.exact[q] == upperOther || h.below[q] || h.hidden(q, true)
}

// relation of a path to the prefixes.
type relation uint8

const (
	outside  relation = iota
	inside            // a prefix or below one
	ancestor          // a proper ancestor of a prefix (or the root)
)

func relate(p string, prefixes []string) relation {
	if p == "" {
		return ancestor
	}
	rel := outside
	for _, q := range prefixes {
		if under(p, q) {
			return inside
		}
		if strictAncestor(p, q) {
			rel = ancestor
		}
	}
	return rel
}
