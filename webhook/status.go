package webhook

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// statusAllowed lets a reader in to the status page: with the read
// secret as the Authorization header (API clients), or as a browser with
// HTTP Basic credentials whose password is the read secret (without its
// "Bearer " scheme, or whole; any user name). Without either it answers
// 401 with a Basic challenge, so a browser asks for them.
func (s *Server) statusAllowed(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.ReadSecret == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(s.cfg.ReadSecret)) == 1 {
		return true
	}
	if _, pw, ok := r.BasicAuth(); ok {
		token := s.cfg.ReadSecret
		if scheme, rest, found := strings.Cut(token, " "); found && strings.EqualFold(scheme, "Bearer") {
			token = rest
		}
		if subtle.ConstantTimeCompare([]byte(pw), []byte(token)) == 1 || subtle.ConstantTimeCompare([]byte(pw), []byte(s.cfg.ReadSecret)) == 1 {
			return true
		}
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="phtoci serve", charset="UTF-8"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte("phtoci serve: log in with any user name and the read secret (read_secret, without \"Bearer \") as the password\n"))
	return false
}

// statusQuery is the status page's search: a train id (exact, else a
// part of it), a verdict status, a station on the route.
type statusQuery struct {
	Train, Status, Station string
}

func (q statusQuery) active() bool { return q.Train != "" || q.Status != "" || q.Station != "" }

// keep reports whether a train matches the query.
func (q statusQuery) keep(t statusTrain) bool {
	if q.Train != "" && !strings.Contains(t.ID, q.Train) {
		return false
	}
	if q.Status != "" && (t.Last == nil || t.Last.Status != q.Status) {
		return false
	}
	if q.Station != "" {
		on := false
		for _, st := range t.Route {
			on = on || st.Station == q.Station
		}
		if !on {
			return false
		}
	}
	return true
}

// currentRepository is where a train is now: the repository of its
// newest decided push, or the one that push was routed to.
func (s *Server) currentRepository(hops []trainHop) string {
	if len(hops) == 0 {
		return ""
	}
	h := hops[len(hops)-1]
	if v, err := s.cfg.Store.Get(h.Repository, h.Digest); err == nil && v.RoutedTo != "" && !strings.HasPrefix(v.RoutedTo, "not routed") {
		if i := strings.LastIndexByte(v.RoutedTo, ':'); i > 0 {
			return v.RoutedTo[:i]
		}
	}
	return h.Repository
}
