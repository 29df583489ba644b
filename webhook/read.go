package webhook

import (
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxPage bounds a page of GET /v1/verdicts.
const maxPage = 500

// listVerdicts serves GET /v1/verdicts?repository=&status=&since=&limit=&cursor=:
// {"verdicts": [...], "next": CURSOR} (next is absent on the last page).
func (s *Server) listVerdicts(w http.ResponseWriter, r *http.Request) {
	q, err := verdictQuery(r.URL.Query())
	if err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	page, next, err := s.cfg.Store.listVerdicts(q)
	if errors.Is(err, errBadCursor) {
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err != nil {
		s.storeFailed(w, "GET /v1/verdicts", err)
		return
	}
	if page == nil {
		page = []Verdict{}
	}
	out := map[string]any{"verdicts": page}
	if next != "" {
		out["next"] = next
	}
	reply(w, http.StatusOK, out)
}

func verdictQuery(p url.Values) (verdictFilter, error) {
	q := verdictFilter{Repository: p.Get("repository"), Status: p.Get("status"), Cursor: p.Get("cursor"), Limit: 50}
	switch q.Status {
	case "", StatusPending, StatusVerified, StatusRejected, StatusError:
	default:
		return q, errors.New("status: want pending, verified, rejected or error, found " + strconv.Quote(q.Status))
	}
	if v := p.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return q, errors.New("since: want an RFC 3339 time, found " + strconv.Quote(v))
		}
		q.Since = t
	}
	if v := p.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			return q, errors.New("limit: want 1…" + strconv.Itoa(maxPage) + ", found " + strconv.Quote(v))
		}
		q.Limit = n
	}
	return q, nil
}

// Station progress on a train's route.
const (
	stationDone    = "done"
	stationCurrent = "current"
	stationPending = "pending"
)

// stationState is one station of a train's route and how far the train is.
type stationState struct {
	Station string `json:"station"`
	State   string `json:"state"`
}

// trainProgress is GET /v1/trains/{id}: every hop seen of a train and its
// progress along its route (from its newest verified hop).
type trainProgress struct {
	ID         string         `json:"id"`
	Repository string         `json:"repository,omitempty"` // where it was first seen
	Route      []stationState `json:"route"`
	Hops       []trainHop     `json:"hops"`
}

func (s *Server) trainView(id string) (*trainProgress, error) {
	hops, err := s.cfg.Store.hopsOf(id)
	if err != nil {
		return nil, err
	}
	rec, err := s.cfg.Store.trainByID(id)
	if err != nil && len(hops) == 0 {
		return nil, err
	}
	tv := &trainProgress{ID: id, Hops: hops, Route: []stationState{}}
	if tv.Hops == nil {
		tv.Hops = []trainHop{}
	}
	if rec == nil {
		return tv, nil
	}
	tv.Repository = rec.Repository
	if cur := s.currentRepository(hops); cur != "" {
		tv.Repository = cur // where the train is now
	}
	// The newest verified hop says which station is next.
	next, seen := "", false
	for _, h := range hops {
		if h.Status == StatusVerified {
			next, seen = h.Next, true
		}
	}
	cur := len(rec.Route) // all done when the route is over
	if !seen {
		cur = 0
	}
	for i, st := range rec.Route {
		if seen && st.Station == next {
			cur = i
		}
	}
	for i, st := range rec.Route {
		state := stationPending
		switch {
		case i < cur:
			state = stationDone
		case i == cur:
			state = stationCurrent
		}
		tv.Route = append(tv.Route, stationState{Station: st.Station, State: state})
	}
	return tv, nil
}

func (s *Server) train(w http.ResponseWriter, id string) {
	tv, err := s.trainView(id)
	if errors.Is(err, ErrNoVerdict) {
		reply(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	if err != nil {
		s.storeFailed(w, "GET /v1/trains/"+id, err)
		return
	}
	reply(w, http.StatusOK, tv)
}

// statusRefresh is how often the status page reloads itself.
const statusRefresh = 10

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"short": func(d string) string {
		if len(d) > 19 {
			return d[:19] + "…"
		}
		return d
	},
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<title>phtoci serve</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
.done{color:#186a1b}.current{color:#0b4fa8;font-weight:bold}.pending{color:#888}
.verified{color:#186a1b}.rejected,.error{color:#b00020;font-weight:bold}.st{margin-right:.8em}
code{font-size:12px}
</style></head><body>
<h1>phtoci serve</h1>
{{if .Untrusted}}<p id="untrusted" class="error">Untrusted: serve runs without a trust store (allow_untrusted), so any self-signed train is verified.</p>{{end}}
<p>Updated {{when .Now}}; reloads every {{.Refresh}} s.</p>
<form method="get" action="/" id="search">
<label>Train id <input name="train" value="{{.Query.Train}}" size="40"></label>
<label>Status <select name="status"><option value="">any</option>{{range .Statuses}}<option{{if eq . $.Query.Status}} selected{{end}}>{{.}}</option>{{end}}</select></label>
<label>Station <input name="station" value="{{.Query.Station}}" size="20"></label>
<button type="submit">Search</button>
</form>
<h2>Recent trains</h2>
<table id="trains"><tr><th>Train</th><th>Repository now</th><th>Route</th><th>Last verdict</th></tr>
{{range .Trains}}<tr class="train"><td><code>{{.ID}}</code></td><td><code>{{.Repository}}</code></td>
<td>{{range .Route}}<span class="st {{.State}}">{{if eq .State "done"}}✓{{else if eq .State "current"}}▶{{else}}○{{end}} {{.Station}} ({{.State}})</span>{{end}}</td>
<td>{{with .Last}}<span class="{{.Status}}">{{.Status}}</span>{{if .Check}} — {{.Check}}{{end}} <code>{{.Repository}}@{{short .Digest}}</code> {{when .Time}}{{end}}</td></tr>
{{else}}<tr><td colspan="4">{{if .Query.Active}}No train matches.{{else}}No trains seen yet.{{end}}</td></tr>{{end}}
</table>
<h2>Recent verdicts</h2>
<table id="verdicts"><tr><th>Time</th><th>Artifact</th><th>Status</th><th>Failing check</th><th>Message</th></tr>
{{range .Verdicts}}<tr class="verdict"><td>{{when .Time}}</td><td><code>{{.Artifact.Repository}}{{if .Artifact.Tag}}:{{.Artifact.Tag}}{{end}}@{{short .Artifact.Digest}}</code></td>
<td class="{{.Status}}">{{.Status}}</td><td>{{.Check}}</td><td>{{.Message}}</td></tr>
{{else}}<tr><td colspan="5">No verdicts yet.</td></tr>{{end}}
</table>
</body></html>
`))

type statusTrain struct {
	trainProgress
	Last *trainHop
}

// statusHTML serves the status page: recent trains with their route
// progress, recent verdicts with the failing check; server-rendered, no
// script, reloading itself.
func (s *Server) statusHTML(w http.ResponseWriter, r *http.Request) {
	const recent, searched = 20, 500
	q := statusQuery{Train: r.URL.Query().Get("train"), Status: r.URL.Query().Get("status"), Station: r.URL.Query().Get("station")}
	data := struct {
		Now       time.Time
		Refresh   int
		Untrusted bool
		Query     struct {
			statusQuery
			Active bool
		}
		Statuses []string
		Trains   []statusTrain
		Verdicts []Verdict
	}{Now: time.Now(), Refresh: statusRefresh, Untrusted: s.cfg.Untrusted, Statuses: []string{StatusPending, StatusVerified, StatusRejected, StatusError}}
	data.Query.statusQuery, data.Query.Active = q, q.active()
	n := recent
	if q.active() {
		n = searched // a search looks further back
	}
	ids, err := s.cfg.Store.recentTrains(n)
	if _, e := s.cfg.Store.trainByID(q.Train); err == nil && q.Train != "" && e == nil {
		ids = []string{q.Train} // an exact id
	}
	if err == nil {
		for _, id := range ids {
			tv, err := s.trainView(id)
			if err != nil {
				continue
			}
			st := statusTrain{trainProgress: *tv}
			if n := len(tv.Hops); n > 0 {
				st.Last = &tv.Hops[n-1]
			}
			if q.keep(st) && len(data.Trains) < recent {
				data.Trains = append(data.Trains, st)
			}
		}
	}
	if err == nil {
		data.Verdicts, _, err = s.cfg.Store.listVerdicts(verdictFilter{Limit: recent, Status: q.Status})
	}
	if err != nil {
		s.logStoreError("GET /", nil, err)
		http.Error(w, storeMessage, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	statusPage.Execute(w, data)
}

// readRoute serves the read endpoints other than single verdicts; false:
// not one of them.
func (s *Server) readRoute(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	switch {
	case r.URL.Path == "/":
		if s.statusAllowed(w, r) {
			s.statusHTML(w, r)
		}
	case r.URL.Path == "/v1/verdicts":
		if s.readAllowed(w, r) {
			s.listVerdicts(w, r)
		}
	case strings.HasPrefix(r.URL.Path, "/v1/trains/") && len(r.URL.Path) > len("/v1/trains/"):
		if s.readAllowed(w, r) {
			s.train(w, strings.TrimPrefix(r.URL.Path, "/v1/trains/"))
		}
	default:
		return false
	}
	return true
}
