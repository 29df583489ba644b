// servebench is unix-only on purpose: it runs PostgreSQL through
// internal/testpg, which is.

//go:build unix

// Command servebench measures `phtoci serve` at scale: N distinct trains
// pushed to a real registry (Debian's docker-registry) whose notifications
// go to every replica, once for 3 replicas on one PostgreSQL and once for 1
// replica on bbolt. It reports verdicts per second, push-to-verdict p50
// and p99, peak RSS per replica and how many verifications ran more than
// once, and writes bench/serve-results.md.
//
//	go run ./bench/servebench -n 1000
package main

import (
	"bufio"
	"context"
	"crypto/rsa"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing/fstest"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/testpg"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/webhook"
)

const secret = "Bearer servebench"

func main() {
	n := flag.Int("n", 1000, "distinct trains per run")
	pushers := flag.Int("pushers", 4, "concurrent pushes")
	workers := flag.Int("workers", 2, "workers per replica")
	out := flag.String("out", "bench/serve-results.md", "results file")
	flag.Parse()
	w, err := os.MkdirTemp("/var/tmp", "phtoci-servebench-")
	check(err)
	defer os.RemoveAll(w)
	bin := filepath.Join(w, "phtoci")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/phtoci")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	check(build.Run())

	pg, stopPG, err := testpg.Launch()
	check(err)
	defer stopPG()

	var rows []string
	for _, m := range []struct {
		name     string
		replicas int
		pg       bool
	}{{"3 replicas, PostgreSQL", 3, true}, {"1 replica, bbolt", 1, false}} {
		store := filepath.Join(w, "verdicts.db")
		if m.pg {
			store, err = pg.CreateDB("bench")
			check(err)
		}
		r := run(w, bin, store, m.replicas, *n, *pushers, *workers)
		r.name = m.name
		fmt.Fprintln(os.Stderr, r.row())
		rows = append(rows, r.row())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# phtoci serve benchmark\n\nWritten by `go run ./bench/servebench -n %d` (%s, %d cores, %s). %d distinct one-station trains pushed by %d concurrent\n"+
		"pushers to Debian's docker-registry, whose notifications go to every replica (each event reaches all of them); %d workers per replica; lease 2m.\n"+
		"Verdicts/s: trains / (last verdict − first push). Push-to-verdict: the verdict's time minus the end of the train's push.\n"+
		"Ran twice: attempts started − trains − attempts that met a registry error (retries).\n\n"+
		"| setup | trains | verified | wall s | verdicts/s | push-to-verdict p50 ms | p99 ms | peak RSS per replica MiB | verifications ran twice |\n|---|---|---|---|---|---|---|---|---|\n",
		*n, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), *n, *pushers, *workers)
	for _, r := range rows {
		b.WriteString(r + "\n")
	}
	check(os.WriteFile(*out, []byte(b.String()), 0o644))
	fmt.Print(b.String())
}

type result struct {
	name                 string
	n, verified, twice   int
	wall, rate, p50, p99 float64
	rss                  []float64
}

func (r result) row() string {
	var rss []string
	for _, x := range r.rss {
		rss = append(rss, fmt.Sprintf("%.1f", x))
	}
	return fmt.Sprintf("| %s | %d | %d | %.1f | %.1f | %.0f | %.0f | %s | %d |", r.name, r.n, r.verified, r.wall, r.rate, r.p50, r.p99, strings.Join(rss, " / "), r.twice)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "servebench:", err)
		os.Exit(1)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHealthy(addr string) {
	for i := 0; i < 300; i++ {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	check(fmt.Errorf("%s: not healthy after 30 s", addr))
}

func run(w, bin, store string, replicas, n, pushers, workers int) result {
	dir, err := os.MkdirTemp(w, "run-")
	check(err)
	regAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	var addrs []string
	var procs []*exec.Cmd
	for i := 0; i < replicas; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort())
		cfg := filepath.Join(dir, fmt.Sprintf("serve%d.yaml", i))
		check(os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %s\nsecret: %q\nstore: %q\nregistry: %s\nworkers: %d\nqueue: %d\ninsecure: true\n",
			addr, secret, store, regAddr, workers, 2*n)), 0o600))
		log, err := os.Create(filepath.Join(dir, fmt.Sprintf("serve%d.log", i)))
		check(err)
		cmd := exec.Command(bin, "serve", "--config", cfg, "--log-format", "json")
		cmd.Stderr = log
		check(cmd.Start())
		defer cmd.Process.Kill()
		procs, addrs = append(procs, cmd), append(addrs, addr)
		waitHealthy(addr)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %q\n", filepath.Join(dir, "storage"))
	fmt.Fprintf(&cfg, "http:\n  addr: %s\n  secret: servebench\nnotifications:\n  endpoints:\n", regAddr)
	for i, a := range addrs {
		fmt.Fprintf(&cfg, "    - name: r%d\n      url: http://%s/events\n      headers: {Authorization: [%q]}\n      timeout: 5s\n      threshold: 10\n      backoff: 1s\n      ignore: {actions: [pull]}\n", i, a, secret)
	}
	regCfg := filepath.Join(dir, "registry.yml")
	check(os.WriteFile(regCfg, []byte(cfg.String()), 0o600))
	reg := exec.Command("/usr/bin/docker-registry", "serve", regCfg)
	reg.Stdout, reg.Stderr = io.Discard, io.Discard
	check(reg.Start())
	defer func() { reg.Process.Kill(); reg.Wait() }()
	for i := 0; i < 300; i++ {
		if resp, err := http.Get("http://" + regAddr + "/v2/"); err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Push n distinct trains (one key set; each train has its own query).
	ctx := context.Background()
	k := func() *rsa.PrivateKey { key, err := keys.Generate(2048); check(err); return key }
	user, builder, station := k(), k(), k()
	baseRef, err := oci.ParseRef("oci-archive:testdata/sample/master.oci.tar")
	check(err)
	base, err := oci.Open(ctx, baseRef, oci.Options{})
	check(err)
	var mu sync.Mutex
	pushed := map[string]time.Time{}
	start := time.Now()
	next := make(chan int)
	var wg sync.WaitGroup
	for p := 0; p < pushers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				files := fstest.MapFS{"entrypoint.py": {Data: []byte("print('hi')\n")}, "query.json": {Data: []byte(fmt.Sprintf(`{"q": %d}`, i))}}
				out, err := train.Build(base, files, protocol.BuildOptions{CreatorID: "bench", UserKey: user, BuilderKey: builder,
					Route: []protocol.RouteStation{{ID: "st-1", EcoSystem: "tue", PublicKey: &station.PublicKey}}}, train.Options{})
				check(err)
				ref, err := oci.ParseRef(fmt.Sprintf("%s/pht/bench:t%d", regAddr, i))
				check(err)
				var d v1.Hash
				for try := 0; ; try++ {
					if d, err = oci.Write(ctx, ref, out.Image, oci.Options{Insecure: true, Quiet: true}); err == nil || try == 3 {
						break
					}
				}
				check(err)
				out.Close()
				mu.Lock()
				pushed["pht/bench@"+d.String()] = time.Now()
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	fmt.Fprintf(os.Stderr, "%d trains pushed in %.1f s\n", n, time.Since(start).Seconds())

	// Wait for every verdict (read from replica 0: the store is shared).
	var verdicts []webhook.Verdict
	deadline := time.Now().Add(20 * time.Minute)
	for {
		verdicts = verdicts[:0]
		cursor := ""
		for {
			resp, err := http.Get("http://" + addrs[0] + "/v1/verdicts?repository=pht/bench&limit=500&cursor=" + cursor)
			check(err)
			var page struct {
				Verdicts []webhook.Verdict
				Next     string
			}
			check(json.NewDecoder(resp.Body).Decode(&page))
			resp.Body.Close()
			for _, v := range page.Verdicts {
				if v.Status == webhook.StatusVerified || v.Status == webhook.StatusRejected {
					verdicts = append(verdicts, v)
				}
			}
			if page.Next == "" {
				break
			}
			cursor = page.Next
		}
		if len(verdicts) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r := result{n: n, wall: time.Since(start).Seconds()}
	var lat []float64
	last := start
	for _, v := range verdicts {
		if v.Status == webhook.StatusVerified {
			r.verified++
		}
		if v.Time.After(last) {
			last = v.Time
		}
		if t, ok := pushed[v.Artifact.Key()]; ok {
			lat = append(lat, float64(v.Time.Sub(t).Milliseconds()))
		}
	}
	sort.Float64s(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	r.p50, r.p99 = pct(0.50), pct(0.99)
	r.rate = float64(len(verdicts)) / last.Sub(start).Seconds()
	attempts, regErrs := 0, 0
	for i, a := range addrs {
		attempts += int(metric(a, "phtoci_webhook_attempts_total"))
		regErrs += int(metric(a, "phtoci_webhook_registry_errors_total"))
		r.rss = append(r.rss, peakRSS(procs[i].Process.Pid))
	}
	r.twice = attempts - len(verdicts) - regErrs
	for _, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
		p.Wait()
	}
	return r
}

func metric(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	check(err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// peakRSS is a process's high-water RSS in MiB (VmHWM).
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
