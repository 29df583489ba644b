package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestVersionLinked builds phtoci as a release is built (version and commit
// set at link time) and asks both ways.
func TestVersionLinked(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "phtoci")
	const rev = "0123456789abcdef0123456789abcdef01234567"
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=v1.2.3 -X main.revision="+rev, "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("phtoci %v: %v", args, err)
		}
		if !strings.HasPrefix(string(out), "phtoci 1.2.3 (revision "+rev+", go") || strings.Count(string(out), "\n") != 1 {
			t.Errorf("phtoci %v: %q", args, out)
		}
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v versionInfo
	if err := json.Unmarshal(out, &v); err != nil || v.Version != "1.2.3" || v.Revision != rev || v.Go == "" || v.Platform == "" {
		t.Errorf("version --json: %s (%v)", out, err)
	}
}

func TestVersionFrom(t *testing.T) {
	const rev = "e987e2f724e577a0345a12716c78521382401d36"
	for _, c := range []struct {
		name, linked, main, rev string
		modified                bool
		want                    string
	}{
		{"linked wins", "v0.3.0", "v0.0.0-20261126140000-e987e2f724e5", rev, false, "0.3.0"},
		{"tagged commit", "", "v0.2.0", rev, false, "0.2.0"},
		{"go install @tag", "", "v0.2.0", "", false, "0.2.0"},
		{"between tags", "", "v0.2.1-0.20261126140000-e987e2f724e5", rev, false, "0.0.0-e987e2f724e5"},
		{"no tag yet", "", "v0.0.0-20261126140000-e987e2f724e5", rev, false, "0.0.0-e987e2f724e5"},
		{"go install @commit", "", "v0.0.0-20261126140000-e987e2f724e5", "", false, "0.0.0-e987e2f724e5"},
		{"modified tree", "", "v0.2.1-0.20261126140000-e987e2f724e5+dirty", rev, true, "0.0.0-e987e2f724e5-dirty"},
		{"tag, modified", "", "v0.2.0+dirty", rev, true, "0.0.0-e987e2f724e5-dirty"},
		{"devel with vcs", "", "(devel)", rev, false, "0.0.0-e987e2f724e5"},
		{"nothing known", "", "(devel)", "", false, "0.0.0-unknown"},
	} {
		if got := versionFrom(c.linked, c.main, c.rev, c.modified); got != c.want {
			t.Errorf("%s: versionFrom(%q, %q, %q, %v) = %q, want %q", c.name, c.linked, c.main, c.rev, c.modified, got, c.want)
		}
	}
}

func TestUnknownCommandIsUsageError(t *testing.T) {
	fails(t, exitUsage, nil, []string{"nosuch"}, `unknown command "nosuch"`)
	fails(t, exitUsage, nil, []string{"verfy", "x.tar"}, `unknown command "verfy"`, `did you mean "verify"`)
	fails(t, exitUsage, nil, []string{"keys", "nosuch"}, `unknown command "nosuch"`)
	fails(t, exitUsage, nil, []string{"help", "nosuch"}, `unknown command "nosuch"`)
	fails(t, exitUsage, nil, []string{"completion", "tcsh"}, `unknown shell "tcsh"`)
}

func TestKeysHelpListsSubcommands(t *testing.T) {
	for _, args := range [][]string{{"keys", "--help"}, {"help", "keys"}, {"keys"}} {
		r := ok(t, args...)
		for _, want := range []string{"COMMANDS:", "generate", "public", "fingerprint", "Examples:", "EXIT CODES:"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("phtoci %s lacks %q:\n%s", strings.Join(args, " "), want, r.stdout)
			}
		}
	}
}

// commandNames lists every visible command and subcommand by full name.
func commandNames(prefix string, cmds []*cli.Command) []string {
	var names []string
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		n := strings.TrimSpace(prefix + " " + c.Name)
		names = append(names, n)
		names = append(names, commandNames(n, c.Subcommands)...)
	}
	return names
}

func TestEveryCommandHelpHasExample(t *testing.T) {
	names := commandNames("", newApp(nil, nil, nil).Commands)
	if len(names) < 12 {
		t.Fatalf("only %d commands: %v", len(names), names)
	}
	for _, n := range names {
		r := ok(t, append(strings.Fields(n), "--help")...)
		i := strings.Index(r.stdout, "Examples:\n")
		if i < 0 || !strings.Contains(r.stdout[i:], "\n     phtoci "+n) || !strings.Contains(r.stdout, "EXIT CODES:") {
			t.Errorf("phtoci %s --help has no example of phtoci %s:\n%s", n, n, r.stdout)
		}
	}
}

// TestCompletion runs the bash script in bash against the binary, and checks
// that zsh's asks the binary too and fish's names every command.
func TestCompletion(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "phtoci.bash")
	if err := os.WriteFile(script, []byte(ok(t, "completion", "bash").stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		words = append([]string{phtociBin}, words...)
		prog := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _phtoci_complete; echo "${COMPREPLY[*]}"`
		out, err := exec.Command("bash", append([]string{"-c", prog, "bash", script}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %v: %v\n%s", words, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("ke"); got != "keys" {
		t.Errorf("completing 'ke': %q, want keys", got)
	}
	if got := complete("keys", "fi"); got != "fingerprint" {
		t.Errorf("completing 'keys fi': %q, want fingerprint", got)
	}
	if got := complete("pre-run", "--stat"); got != "--station" {
		t.Errorf("completing 'pre-run --stat': %q, want --station", got)
	}
	if got := complete("ver"); got != "verify version" {
		t.Errorf("completing 'ver': %q, want verify version", got)
	}
	// Issue 28: the shells, not urfave/cli's "help h".
	if got := complete("completion", ""); got != "bash zsh fish" {
		t.Errorf("completing 'completion ': %q, want bash zsh fish", got)
	}
	if got := complete("completion", "z"); got != "zsh" {
		t.Errorf("completing 'completion z': %q, want zsh", got)
	}
	zsh := ok(t, "completion", "zsh").stdout
	if !strings.HasPrefix(zsh, "#compdef phtoci\n") || !strings.Contains(zsh, "--generate-bash-completion") {
		t.Errorf("zsh script:\n%s", zsh)
	}
	fish := ok(t, "completion", "fish").stdout
	for _, n := range commandNames("", newApp(nil, nil, nil).Commands) {
		f := strings.Fields(n)
		if !strings.Contains(fish, "-a '"+f[len(f)-1]+"'") {
			t.Errorf("fish completion lacks %s", n)
		}
	}
}

func TestManPage(t *testing.T) {
	man := ok(t, "man").stdout
	if !strings.HasPrefix(man, ".nh\n.TH phtoci 1") {
		t.Fatalf("not a section 1 man page:\n%.200s", man)
	}
	for _, n := range commandNames("", newApp(nil, nil, nil).Commands) {
		f := strings.Fields(n)
		head := ".SH " + f[0]
		if len(f) > 1 {
			head = ".SS " + f[1]
		}
		if !strings.Contains(man, "\n"+head+"\n") {
			t.Errorf("man page lacks %q", head)
		}
	}
	if !strings.Contains(man, "\n.SH EXIT STATUS\n") || !strings.Contains(man, "\n.SH ENVIRONMENT\n") {
		t.Errorf("man page lacks EXIT STATUS or ENVIRONMENT")
	}
	if strings.Count(man, "Examples:") < 12 || strings.Contains(man, ".SH man") {
		t.Errorf("man page: %d example blocks, or lists the hidden man command", strings.Count(man, "Examples:"))
	}
}
