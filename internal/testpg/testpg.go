// testpg is unix-only on purpose: it runs the server as another user
// (syscall.Credential) when run as root, and PostgreSQL's test setup here
// is Debian's. Nothing but tests imports it.

//go:build unix

// Package testpg runs a real PostgreSQL server (Debian's postgresql
// package, /usr/lib/postgresql/*/bin) for tests: initdb into a temporary
// directory, the server on a free 127.0.0.1 port, stopped and removed when
// the test ends. PostgreSQL refuses to run as root, so as root the server
// runs as the unprivileged user nobody.
package testpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// AptInstall is the command that installs the server.
const AptInstall = "sudo apt-get install -y postgresql"

// Bin returns the directory of the newest installed PostgreSQL's programs.
func Bin() (string, error) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return "", fmt.Errorf("no /usr/lib/postgresql/*/bin/initdb: install it with `%s` (or make test-deps)", AptInstall)
	}
	sort.Slice(m, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[j]))))
		return vi < vj
	})
	return filepath.Dir(m[len(m)-1]), nil
}

// Server is a running PostgreSQL.
type Server struct {
	// Port is its 127.0.0.1 port; the superuser is "postgres", no password.
	Port    int
	LogFile string
	n       atomic.Int64

	start  func() (*exec.Cmd, <-chan error, error) // runs postgres on Port
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited <-chan error
}

// DSN is the URL of database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// NewDB creates an empty database and returns its URL.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	dsn, err := s.CreateDB(fmt.Sprintf("t%d", s.n.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// CreateDB creates database name and returns its URL.
func (s *Server) CreateDB(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	return s.DSN(name), nil
}

// Start runs a server for the test.
func Start(t testing.TB) *Server {
	t.Helper()
	s, stop, err := Launch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return s
}

// Launch runs a server in a new temporary directory; stop ends it and
// removes the directory.
func Launch() (s *Server, stop func(), err error) {
	bin, err := Bin()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "testpg-")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			return nil, nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, nil, err
		}
	}
	as := func(c *exec.Cmd) *exec.Cmd {
		c.Dir = dir
		c.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
		if cred != nil {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return c
	}
	data := filepath.Join(dir, "data")
	if out, err := as(exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	s = &Server{LogFile: filepath.Join(dir, "postgres.log")}
	s.start = func() (*exec.Cmd, <-chan error, error) {
		log, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, err
		}
		if cred != nil {
			os.Chown(s.LogFile, int(cred.Uid), int(cred.Gid))
		}
		cmd := as(exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(s.Port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
			"-c", "full_page_writes=off", "-c", "max_connections=200"))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			log.Close()
			return nil, nil, err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); log.Close() }()
		if err := s.wait(exited); err != nil {
			cmd.Process.Kill()
			<-exited
			return nil, nil, err
		}
		return cmd, exited, nil
	}
	for attempt := 0; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			return nil, nil, err
		}
		cmd, exited, err := s.start()
		if err != nil {
			b, _ := os.ReadFile(s.LogFile)
			if attempt < 3 && strings.Contains(string(b), "in use") {
				os.Truncate(s.LogFile, 0)
				continue // the free port was taken meanwhile
			}
			return nil, nil, fmt.Errorf("postgres: %v\n%s", err, b)
		}
		s.cmd, s.exited = cmd, exited
		stop = func() {
			s.Stop()
			os.RemoveAll(dir)
		}
		return s, stop, nil
	}
}

// Stop shuts the server down (fast shutdown: open connections are ended)
// and waits until it is gone; Restart runs it again on the same port and
// data. Tests use them for a database outage.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Restart starts a stopped server again on its port and waits until it
// accepts connections.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	cmd, exited, err := s.start()
	if err != nil {
		return fmt.Errorf("restarting postgres on port %d: %w", s.Port, err)
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

func (s *Server) wait(exited <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			c.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("not accepting connections after 60 s")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
