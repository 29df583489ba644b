package main

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// rawControl returns the first control or format character in s other
// than a newline (and the byte offset), or -1.
func rawControl(s string) (rune, int) {
	for i, r := range s {
		if r == '\n' {
			continue
		}
		if r == utf8.RuneError || (!unicode.IsPrint(r) && r != ' ') {
			return r, i
		}
	}
	return 0, -1
}

// TestControlCharactersEscaped: a train whose station id and @id hold a
// terminal escape sequence that erases the line and prints a green
// "verified" (and a second station id with a newline, a carriage return
// and a right-to-left override) goes through inspect, verify, pre-run,
// post-run, decrypt and failing steps; no output of the binary, stdout or
// stderr, holds a raw control character.
func TestControlCharactersEscaped(t *testing.T) {
	evil := "st-a\x1b[2K\r\x1b[32mverified\x1b[0m"
	evil2 := "st-b\nverified: all\r\u202eok\u009b"
	w := newWorld(t, evil, evil2)
	built := w.path("train.tar")
	args := []string{"build", "../../testdata/sample/master.oci.tar", "--files", "../../testdata/sample/train",
		"--query", "../../testdata/sample/query.json", "--creator-id", "researcher\x1b]0;owned\x07",
		"--train-id", "train\x1b[31m-1\x1b[0m", "--user-key", w.key("researcher"), "--builder-key", w.key("builder"),
		"-o", built, "--quiet", "--route", evil + "=" + w.path(evil) + ".pub.pem", "--route", evil2 + "=" + w.path(evil2) + ".pub.pem"}
	var outs []result
	check := func(what string, r result) {
		t.Helper()
		outs = append(outs, r)
		for name, s := range map[string]string{"stdout": r.stdout, "stderr": r.stderr} {
			if c, i := rawControl(s); i >= 0 {
				t.Errorf("%s: raw control character %U in %s at %d: %q", what, c, name, i, s)
			}
		}
	}
	check("build", ok(t, args...))
	check("inspect", ok(t, "inspect", built, "--quiet"))
	check("verify", ok(t, "verify", built, "--quiet"))
	check("verify as a station", ok(t, append([]string{"verify", built}, w.stationArgs(evil)...)...))
	check("verify as the wrong station", ok(t, append([]string{"verify", built}, w.stationArgs(evil2)...)...))
	check("pre-run", ok(t, append([]string{"pre-run", built, "-o", w.path("dec.tar"), "--ledger", "none"}, w.stationArgs(evil)...)...))
	check("pre-run, not this station's turn", phtoci(t, "", nil, append([]string{"pre-run", built, "-o", w.path("dec2.tar"), "--ledger", "none"}, w.stationArgs(evil2)...)...))
	a := w.path("a.tar")
	check("post-run", ok(t, append([]string{"post-run", built, "--results", w.results(t, "a"), "-o", a, "--ledger", "none"}, w.stationArgs(evil)...)...))
	check("post-run again, as the same station", phtoci(t, "", nil, append([]string{"post-run", a, "--results", w.results(t, "a"), "-o", w.path("aa.tar"), "--ledger", "none"}, w.stationArgs(evil)...)...))
	check("inspect after one station", ok(t, "inspect", a, "--quiet"))
	check("decrypt of an incomplete route", ok(t, "decrypt", a, "--key", w.key("researcher"), "--out", w.path("out"), "--quiet"))
	check("verify --json", ok(t, "verify", a, "--quiet", "--json"))

	// The escapes are there, readable: the operator sees what the id holds.
	all := ""
	for _, r := range outs {
		all += r.stdout + r.stderr
	}
	for _, want := range []string{`st-a\x1b[2K\r\x1b[32mverified\x1b[0m`, `train\x1b[31m-1\x1b[0m`, `st-b\nverified: all\r\u202eok\u009b`} {
		if !strings.Contains(all, want) {
			t.Errorf("no output shows %s", want)
		}
	}
}
