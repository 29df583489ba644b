// storeerr.go marks the errors of the verdict store, so that they reach
// the server's log (credentials masked) and never a verdict's message or
// an answer.

package webhook

import (
	"errors"
	"net/http"

	"github.com/phtoci/phtoci/internal/redact"
	bolt "go.etcd.io/bbolt"
)

// errStore marks an error of the verdict store (a database down, a
// disk full): never final, never shown to a reader.
var errStore = errors.New("verdict store")

// storeMessage is what verdicts and answers say instead of a store error.
const storeMessage = "verdict store unavailable (details in the server's log)"

type storeError struct {
	name string // the store, credentials masked
	err  error
}

func (e *storeError) Error() string {
	return redact.Text("verdict store " + e.name + ": " + e.err.Error())
}
func (e *storeError) Unwrap() []error { return []error{errStore, e.err} }

// storeErr marks err as the store's (named name); the store's answers
// (no verdict, a bad cursor) stay as they are.
func storeErr(name string, err error) error {
	if err == nil || errors.Is(err, ErrNoVerdict) || errors.Is(err, errBadCursor) || errors.Is(err, errStore) {
		return err
	}
	return &storeError{name: redact.URL(name), err: err}
}

// boltDB is a bbolt file whose transactions' errors are marked as the
// store's.
type boltDB struct {
	*bolt.DB
	path string
}

func (d boltDB) Update(f func(*bolt.Tx) error) error { return storeErr(d.path, d.DB.Update(f)) }
func (d boltDB) View(f func(*bolt.Tx) error) error   { return storeErr(d.path, d.DB.View(f)) }

// storeFailed answers a request whose store call failed: the details go
// to the log, the client learns only that the store failed.
func (s *Server) storeFailed(w http.ResponseWriter, what string, err error) {
	s.logStoreError(what, nil, err)
	// 503, not 500 or 404: the store did not answer (an outage), so the
	// client (a registry delivering events, a reader) retries.
	w.Header().Set("Retry-After", "5")
	reply(w, http.StatusServiceUnavailable, map[string]string{"error": storeMessage})
}
