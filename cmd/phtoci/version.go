package main

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is set for release builds:
//
//	go build -ldflags "-X main.version=1.2.3" ./cmd/phtoci
//
// Without it the version comes from the build information Go records: the
// tag of a tagged commit, else 0.0.0-<commit> (issue 20).
var version string

// revision is the commit of a release build (-X main.revision=...), for
// builds where Go records no VCS information (-buildvcs=false, a source
// tarball, a git worktree).
var revision string

// versionInfo is what phtoci version prints.
type versionInfo struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// pseudoVersion matches Go's pseudo-versions (v0.0.0-20261126140000-e987e2fabcde,
// v1.2.4-0.20261126140000-e987e2fabcde, v1.2.3-pre.0.20261126140000-e987e2fabcde)
// and captures their commit.
var pseudoVersion = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+-(?:[0-9A-Za-z.-]*\.)?[0-9]{14}-([0-9a-f]{12})$`)

func buildVersion() versionInfo {
	v := versionInfo{Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	mainVersion := ""
	if ok {
		mainVersion = info.Main.Version
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if revision != "" {
		v.Revision, v.Modified = revision, false
	}
	v.Version = versionFrom(version, mainVersion, v.Revision, v.Modified)
	return v
}

// versionFrom picks the version to print: the one set at link time, a
// release tag recorded by Go (go install ...@v1.2.3, or a build of a tagged
// commit), else 0.0.0-<12 digits of the commit> (-dirty for a modified tree).
func versionFrom(linked, mainVersion, revision string, modified bool) string {
	if linked != "" {
		return strings.TrimPrefix(linked, "v")
	}
	mv := strings.TrimSuffix(mainVersion, "+dirty")
	if m := pseudoVersion.FindStringSubmatch(mv); m != nil {
		if revision == "" {
			revision = m[1]
		}
	} else if strings.HasPrefix(mv, "v") && mainVersion == mv {
		return strings.TrimPrefix(mv, "v")
	}
	if revision == "" {
		return "0.0.0-unknown"
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	s := "0.0.0-" + revision
	if modified {
		s += "-dirty"
	}
	return s
}

func (v versionInfo) line() string {
	s := "phtoci " + v.Version
	var extra []string
	if v.Revision != "" {
		r := v.Revision
		if v.Modified {
			r += ", modified"
		}
		extra = append(extra, "revision "+r)
	}
	extra = append(extra, v.Go, v.Platform)
	return s + " (" + strings.Join(extra, ", ") + ")"
}

func printVersion(c *cli.Context) {
	fmt.Fprintln(c.App.Writer, buildVersion().line())
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print phtoci's version, commit and Go version",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine-readable output on stdout"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("version takes no arguments, got %q", c.Args().First())
			}
			v := buildVersion()
			return printResult(c, v, func(w io.Writer) { fmt.Fprintln(w, v.line()) })
		},
	}
}

// completionFlag is urfave/cli's request for completions of the words before it.
const completionFlag = "--generate-bash-completion"

// The bash and zsh scripts are written here because urfave/cli v2 keeps its
// own (autocomplete/bash_autocomplete, zsh_autocomplete) as files in its
// repository, not behind a Go API; these follow them, minus bash's
// dependency on the bash-completion package. Both ask phtoci itself for the
// candidates (--generate-bash-completion), so they follow the command tree.
// Fish's comes from the tree through urfave/cli's ToFishCompletion.
const bashCompletion = `# bash completion for phtoci (phtoci completion bash)
_phtoci_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}" opts
  if [[ "$cur" == -* ]]; then
    opts=$("${COMP_WORDS[@]:0:COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  return 0
}
complete -o bashdefault -o default -F _phtoci_complete phtoci
`

const zshCompletion = `#compdef phtoci
# zsh completion for phtoci (phtoci completion zsh)
_phtoci() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$funcstack[1]" == "_phtoci" ]]; then
  _phtoci "$@"
else
  compdef _phtoci phtoci
fi
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		// Completing its argument offers the shells (urfave/cli would
		// offer its help command).
		BashComplete: func(c *cli.Context) {
			if c.NArg() == 0 {
				fmt.Fprintln(c.App.Writer, "bash\nzsh\nfish")
			}
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("completion needs one shell: bash, zsh or fish")
			}
			var script string
			switch sh := c.Args().First(); sh {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				// From a fresh command tree: the running app has its help
				// flags and commands added twice by now.
				s, err := newApp(nil, c.App.Writer, c.App.ErrWriter).ToFishCompletion()
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				script = s
			default:
				return usagef("completion: unknown shell %q: want bash, zsh or fish", sh)
			}
			_, err := io.WriteString(c.App.Writer, script)
			return err
		},
	}
}

// manCommand prints the man page (section 1) made from the command tree;
// make man writes it to bin/phtoci.1. Hidden: it is a build step.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the man page (roff)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			s, err := newApp(nil, c.App.Writer, c.App.ErrWriter).ToManWithSection(1)
			if err != nil {
				return fmt.Errorf("man page: %w", err)
			}
			_, err = io.WriteString(c.App.Writer, s+manTail)
			return err
		},
	}
}

// manTail ends the man page with what urfave/cli does not generate: the
// environment and the exit codes.
const manTail = `
.SH ENVIRONMENT
.TP
\fBSTATION_ID\fP, \fBPRIVATE_KEY_PATH\fP, \fBPRIVATE_KEY_PASSWORD\fP
the station's identity, as the old protocol container reads it (--station, --key, --key-password-file)
.TP
\fBPHTOCI_TRUST\fP, \fBPHTOCI_TMPDIR\fP, \fBPHTOCI_USERNAME\fP
defaults of --trust, --tmpdir and --username
.TP
\fBSOURCE_DATE_EPOCH\fP
the modification time of the layers phtoci writes
.TP
\fBDOCKER_CONFIG\fP
the directory of the Docker config.json with registry credentials (default ~/.docker)

.SH EXIT STATUS
.TP
0
success
.TP
1
verification failed (tampered or unsigned train, wrong key, station not on route, leak refused)
.TP
2
usage error (bad flag, reference or option, unknown command, wrong key password)
.TP
3
I/O or registry error (file missing, registry unreachable, corrupt image)
`

// unknownCommand is the usage error for a command name phtoci does not
// have, with urfave/cli's suggestion of the nearest one.
func unknownCommand(c *cli.Context, name string) error {
	msg := fmt.Sprintf("unknown command %q", name)
	if cli.SuggestCommand != nil {
		s := cli.SuggestCommand(c.Command.Subcommands, name)
		if s == "" {
			s = cli.SuggestCommand(c.App.Commands, name)
		}
		if s != "" {
			msg += "; " + strings.ToLower(s[:1]) + s[1:]
		}
	}
	return usageError{fmt.Errorf("%s (phtoci --help lists the commands)", msg)}
}
