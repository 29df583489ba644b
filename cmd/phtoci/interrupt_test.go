package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phtoci/phtoci/internal/faultproxy"
	"github.com/phtoci/phtoci/internal/testutil"
)

// TestInterruptedUploadNamesBlob (issue 28): Ctrl-C while post-run's
// layer upload waits on a registry that stopped taking it ends with exit
// 3 and a message naming the registry and the repository of the upload,
// never the upload URL with its _state token (a credential-like session
// handle) or its session id.
func TestInterruptedUploadNamesBlob(t *testing.T) {
	f := newFaultWorld(t)
	i := f.proxy.Add(faultproxy.Fault{Kind: faultproxy.Stall, Method: http.MethodPatch, OnRequest: true, Bytes: 1 << 30})
	// The proxy reads the whole upload, then holds it unanswered: the
	// layer is made and sent, and only the PATCH waits when SIGINT comes.
	var mu sync.Mutex
	var uploads []string
	sent := make(chan struct{}, 1)
	f.proxy.Hook(func(r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/uploads/") {
			mu.Lock()
			uploads = append(uploads, r.URL.Path)
			mu.Unlock()
		}
		if r.Method == http.MethodPatch {
			r.Body = &eofNotice{ReadCloser: r.Body, eof: sent}
		}
	})
	cmd := exec.Command(phtociBin, append([]string{"post-run", f.via("st1"), "--results", f.world.results(t, "st2"), "--ledger", "none"}, f.stationArgs("st2")...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	testutil.Must(t, cmd.Start())
	select {
	case <-sent:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("the layer upload never ended")
	}
	if f.proxy.Fired(i) == 0 {
		t.Fatal("the upload was not held")
	}
	testutil.Must(t, cmd.Process.Signal(syscall.SIGINT))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("post-run still running 10 s after SIGINT")
	}
	msg := stderr.String()
	t.Logf("stderr: %s", msg)
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != exitIO {
		t.Errorf("exit: %v, want code %d", err, exitIO)
	}
	for _, m := range []string{"interrupted by SIGINT", "blob upload to pht/faults", f.proxy.Host} {
		if !strings.Contains(msg, m) {
			t.Errorf("stderr does not mention %q: %s", m, msg)
		}
	}
	if strings.Contains(msg, "_state") || strings.Contains(msg, "/v2/") || strings.Contains(msg, "?") {
		t.Errorf("stderr shows the upload URL: %s", msg)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, u := range uploads {
		if id := u[strings.LastIndex(u, "/")+1:]; id != "" && strings.Contains(msg, id) {
			t.Errorf("stderr shows the upload session %s: %s", id, msg)
		}
	}
}

// eofNotice signals eof (without blocking) when its reader reaches EOF.
type eofNotice struct {
	io.ReadCloser
	eof chan struct{}
}

func (e *eofNotice) Read(p []byte) (int, error) {
	n, err := e.ReadCloser.Read(p)
	if err == io.EOF {
		select {
		case e.eof <- struct{}{}:
		default:
		}
	}
	return n, err
}
