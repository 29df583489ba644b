//go:build !unix

package train

import "errors"

func lockFile(string, bool) (func(), error) {
	return nil, errors.New("file locks are not supported on this system")
}
