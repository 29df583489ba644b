package layer

import (
	"fmt"
	"path"
	"strings"
)

const (
	whiteoutPrefix = ".wh."
	opaqueName     = ".wh..wh..opq"
)

// cleanEntryName turns a tar entry name into a slash path without a leading
// "/" or "./". The root itself ("/", "./", ".") gives "". Names with a ".."
// component are rejected: they would escape the root or depend on it.
func cleanEntryName(name string) (string, error) {
	for rest := name; ; {
		c, r, more := strings.Cut(rest, "/")
		if c == ".." {
			return "", fmt.Errorf("%q: %w: \"..\" component", name, ErrUnsafePath)
		}
		if !more {
			break
		}
		rest = r
	}
	// Without "..", cleaning name and then dropping a leading "/" is
	// cleaning "/"+name; path.Clean returns a clean name (the usual
	// case: a million result entries) without allocating.
	p := strings.TrimPrefix(path.Clean(name), "/")
	if p == "." {
		return "", nil
	}
	return p, nil
}

// cleanPath normalizes a path given by a caller the same way as a tar entry
// name, and rejects the root.
func cleanPath(p string) (string, error) {
	c, err := cleanEntryName(p)
	if err != nil {
		return "", err
	}
	if c == "" {
		return "", fmt.Errorf("%q: %w: empty path", p, ErrBadPath)
	}
	return c, nil
}

// under reports whether p is q or lies below q.
func under(p, q string) bool {
	return p == q || (len(p) > len(q) && p[len(q)] == '/' && strings.HasPrefix(p, q))
}

// strictAncestor reports whether a is a proper ancestor of p ("" is the
// ancestor of every non-root path).
func strictAncestor(a, p string) bool {
	if a == "" {
		return p != ""
	}
	return len(p) > len(a) && p[len(a)] == '/' && strings.HasPrefix(p, a)
}

// comparePaths orders slash paths by their list of components, byte-wise
// (the archive walk order: "a/A.txt" < "a/b.txt" < "a-b.txt" < "a.txt"),
// except that an opaque whiteout sorts first inside its directory, right
// after the directory itself. It returns -1, 0 or +1.
func comparePaths(a, b string) int {
	for {
		ca, ra, moreA := strings.Cut(a, "/")
		cb, rb, moreB := strings.Cut(b, "/")
		if ca != cb {
			switch {
			case ca == opaqueName:
				return -1
			case cb == opaqueName:
				return 1
			case ca < cb:
				return -1
			default:
				return 1
			}
		}
		switch {
		case !moreA && !moreB:
			return 0
		case !moreA:
			return -1
		case !moreB:
			return 1
		}
		a, b = ra, rb
	}
}
