//go:build !unix

package train

import (
	"errors"
	"os"
)

func openOwned(path string) (*os.File, error) { return os.Open(path) }

func lockFile(string, bool) (func(), error) {
	return nil, errors.New("file locks are not supported on this system")
}
