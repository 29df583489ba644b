package oci

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair (hand-written with x/sys/unix to
// avoid a pty module for one test).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening pty slave: %v", err)
	}
	return m, s
}

// TestProgressOnlyOnTerminal: writing archives and pushing draw progress
// bars on a terminal, and write nothing to a buffer, a regular file, or a
// terminal with Quiet.
func TestProgressOnlyOnTerminal(t *testing.T) {
	img := testutil.Must1(random.Image(2<<20, 3))(t)
	reg := testreg.Start(t, testreg.Options{})
	dir := t.TempDir()
	n := 0
	write := func(o Options) {
		n++
		for _, ref := range []Ref{
			kindRef("oci-archive", filepath.Join(dir, fmt.Sprintf("%d.oci.tar", n)), ""),
			kindRef("docker-archive", filepath.Join(dir, fmt.Sprintf("%d.docker.tar", n)), ""),
			regRef(t, reg, fmt.Sprintf("progress/img:%d", n)),
		} {
			o.Transport = reg.Transport()
			testutil.Must1(Write(ctx, ref, img, o))(t)
		}
	}

	var buf bytes.Buffer
	write(Options{Progress: &buf})
	if buf.Len() != 0 {
		t.Errorf("progress written to a buffer: %q", buf.String())
	}
	f := testutil.Must1(os.Create(filepath.Join(dir, "progress.txt")))(t)
	write(Options{Progress: f})
	f.Close()
	if b := testutil.Must1(os.ReadFile(f.Name()))(t); len(b) != 0 {
		t.Errorf("progress written to a regular file: %q", b)
	}

	s, read, stop := ptyCapture(t)
	write(Options{Progress: s, Quiet: true})
	if out := read(); out != "" {
		t.Errorf("progress written with Quiet: %q", out)
	}
	write(Options{Progress: s})
	out := read()
	for _, want := range []string{"writing 4.oci.tar", "writing 4.docker.tar", "pushing " + reg.Host + "/progress/img:4", "%"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal progress lacks %q; got %q", want, out)
		}
	}
	stop()
}

// ptyCapture opens a pty; read returns (and clears) what was written to its
// slave side so far, once the output queue has drained; stop closes it.
func ptyCapture(t *testing.T) (slave *os.File, read func() string, stop func()) {
	t.Helper()
	m, s := openPTY(t)
	var mu sync.Mutex
	var seen bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			k, err := m.Read(b)
			mu.Lock()
			seen.Write(b[:k])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	read = func() string {
		// The bar's output reaches the master side asynchronously; wait for
		// the slave's output queue to drain.
		for i := 0; i < 100; i++ {
			if q, err := unix.IoctlGetInt(int(s.Fd()), unix.TIOCOUTQ); err != nil || q == 0 {
				break
			}
			syscall.Nanosleep(&syscall.Timespec{Nsec: 10e6}, nil)
		}
		syscall.Nanosleep(&syscall.Timespec{Nsec: 50e6}, nil)
		mu.Lock()
		defer mu.Unlock()
		out := seen.String()
		seen.Reset()
		return out
	}
	stop = func() {
		s.Close()
		m.Close()
		<-done
	}
	return s, read, stop
}
