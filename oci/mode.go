package oci

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"
)

// fileMode is the mode of the files an output is made of: 0600 for a
// private image (Options.Private: it holds plaintext), whatever the umask;
// else 0666 less the umask, as a file created by open(2).
func fileMode(opts Options) os.FileMode {
	if opts.Private {
		return 0o600
	}
	return 0o666 &^ processUmask()
}

// dirMode is fileMode for directories (0700, or 0777 less the umask).
func dirMode(opts Options) os.FileMode {
	if opts.Private {
		return 0o700
	}
	return 0o777 &^ processUmask()
}

var umaskOnce = sync.OnceValue(readUmask)

func processUmask() os.FileMode { return umaskOnce() }

// readUmask reads the process's umask from /proc/self/status (Linux 4.7+):
// umask(2) can only read it by changing it, which would race with files
// other goroutines create. 022 when it cannot be read.
func readUmask() os.FileMode {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0o022
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return os.FileMode(m) & 0o777
			}
		}
	}
	return 0o022
}
