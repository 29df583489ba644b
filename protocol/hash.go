package protocol

import (
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/phtoci/phtoci/internal/asynchash"
)

// The protocol's two content hashes, each in one place: the immutable hash
// over the train files and result_hash over the results. Their callers
// differ only in how a file's plaintext reaches the hash (read, decrypted,
// or encrypted on the way), which the file function supplies.

// hashTrain computes the config's hash field (vectors §4): the creator's
// id, the files of fileList in that order (a repeated name once: the
// reference reads the same stream twice and gets nothing the second time;
// query.json never, it is hashed last), the session id, then query.json
// when fsys holds it. file writes the plaintext of fsys's file name into w.
func hashTrain(creatorID string, fileList []string, sessionID []byte, fsys fs.FS, file func(name string, w io.Writer) error) ([]byte, error) {
	h := sha512.New()
	h.Write([]byte(creatorID))
	done := map[string]bool{}
	for _, n := range fileList {
		n = strings.TrimPrefix(n, "./")
		if done[n] || n == "query.json" {
			continue
		}
		done[n] = true
		if err := file(n, h); err != nil {
			return nil, err
		}
	}
	h.Write(sessionID)
	if _, err := fs.Stat(fsys, "query.json"); err == nil {
		if err := file("query.json", h); err != nil {
			return nil, err
		}
	}
	return h.Sum(nil), nil
}

// immutableHash is hashTrain over the plaintext train files in fsys
// (rooted at /opt/pht_train).
func immutableHash(creatorID string, fileList []string, sessionID []byte, fsys fs.FS) ([]byte, error) {
	return hashTrain(creatorID, fileList, sessionID, fsys, func(name string, w io.Writer) error {
		f, err := fsys.Open(name)
		if err != nil {
			return fmt.Errorf("pht_train/%s: %w: listed in file_list but %v", name, ErrImmutableChanged, err)
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
}

// resultsHash is result_hash (vectors §6) in the making: the plaintext of
// every result file in walk order, then the session id, which may be
// known only later (a post-run encrypts its results before it has read
// the config). The files are hashed on another core.
type resultsHash struct{ h *asynchash.Hash }

// hashResults hashes every regular file of fsys in walk order; file
// writes the plaintext of fsys's file name into w. Close the result when
// sum is not called.
func hashResults(fsys fs.FS, file func(name string, w io.Writer) error) (*resultsHash, error) {
	r := &resultsHash{h: asynchash.New(sha512.New())}
	if err := WalkFiles(fsys, func(name string, _ int64) error { return file(name, r.h) }); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// sum appends the session id and returns result_hash; r is closed.
func (r *resultsHash) sum(sessionID []byte) []byte {
	r.h.Write(sessionID)
	return r.h.Sum()
}

// close releases the hashing goroutine (idempotent, nil-safe).
func (r *resultsHash) close() {
	if r != nil {
		r.h.Close()
	}
}

// resultHash is result_hash over the plaintext results in fsys (rooted at
// /opt/pht_results).
func resultHash(fsys fs.FS, sessionID []byte) ([]byte, error) {
	r, err := hashResults(fsys, func(name string, w io.Writer) error {
		f, err := fsys.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.sum(sessionID), nil
}

// WalkFiles calls fn for every regular file of fsys in archive walk order
// (vectors §6): depth first, entries sorted by name byte-wise.
func WalkFiles(fsys fs.FS, fn func(name string, size int64) error) error {
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return fn(p, fi.Size())
	})
}
