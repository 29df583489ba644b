//go:build unix

package train

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openOwned opens path for reading without following a symbolic link and
// refuses a file another user owns.
func openOwned(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if err := checkOwned(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkOwned refuses a file that is not a regular file of the running user.
func checkOwned(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", f.Name())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: owned by uid %d, not by this user (uid %d)", f.Name(), st.Uid, os.Geteuid())
	}
	return nil
}

// lockFile takes a flock on path (created 0600; never through a symbolic
// link, never another user's), exclusive or shared; the returned function
// releases it.
func lockFile(path string, exclusive bool) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, err
	}
	if err := checkOwned(f); err != nil {
		f.Close()
		return nil, err
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}
