package webhook

import (
	"net"
	"sync"
)

// perClientListener caps the connections one remote address holds open
// at once: a connection over the cap is closed as soon as it is accepted.
// netutil.LimitListener bounds only the total, so one client holding
// every slot with idle sockets stalled everyone else until the server's
// read timeout; no well-kept library offers a per-address cap for a
// net.Listener, hence these few lines. Behind a reverse proxy every
// client has the proxy's address: raise the cap there (or let the proxy
// limit its clients).
type perClientListener struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[string]int // remote IP → open connections
}

// limitPerClient wraps l so that one remote IP holds at most max
// connections (32 when max <= 0).
func limitPerClient(l net.Listener, max int) net.Listener {
	if max <= 0 {
		max = 32
	}
	return &perClientListener{Listener: l, max: max, conns: map[string]int{}}
}

func (l *perClientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		if l.conns[ip] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns[ip]++
		l.mu.Unlock()
		return &clientConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *perClientListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip]--; l.conns[ip] <= 0 {
		delete(l.conns, ip)
	}
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// clientConn gives its slot back once, on the first Close.
type clientConn struct {
	net.Conn
	l    *perClientListener
	ip   string
	once sync.Once
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
