// Command phtoci runs the Personal Health Train protocol on container images
// without a Docker daemon. It only parses flags and environment and calls
// one exported function of package train, keys or oci per command.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/phtoci/phtoci/internal/atexit"
	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/phtoci/phtoci/internal/textesc"
	"github.com/phtoci/phtoci/internal/units"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
	"github.com/urfave/cli/v2"
)

// Exit codes, documented in --help.
const (
	exitOK           = 0
	exitVerification = 1
	exitUsage        = 2
	exitIO           = 3
)

const exitHelp = `EXIT CODES:
   0  success
   1  verification failed (tampered or unsigned train, wrong key, station not on route, leak refused)
   2  usage error (bad flag, reference or option, wrong key password)
   3  I/O or registry error (file missing, registry unreachable, corrupt image)`

// defaultMemoryLimit is the Go runtime's soft memory limit unless
// GOMEMLIMIT is set: phtoci streams, so its live heap is small (about 25 MiB
// for a hundred thousand result files' metadata, a few MiB otherwise), and
// the default GC pacing (heap up to twice the live data) would double that
// for no gain. Above the limit the runtime collects more often, it does
// not fail.
const defaultMemoryLimit = 48 << 20

func main() {
	// Trusted roots compiled in, used when the system has none (the
	// container image, a minimal chroot): registries over TLS still verify.
	oci.UseCompiledRoots()
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	// PHTOCI_CPUPROFILE=FILE writes a CPU profile (bench/run.sh uses it).
	if p := os.Getenv("PHTOCI_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				code := run(os.Args, os.Stdin, os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
		}
	}
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run executes the CLI and returns its exit code; main and tests call it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// serve stops gracefully on its own (webhook.Run); a second signal
	// still stops it at once.
	ctx, stop := onSignal(!(len(args) > 1 && args[1] == "serve"), func(msg string) {
		if jsonWanted(args) {
			json.NewEncoder(textesc.NewJSONWriter(stdout)).Encode(map[string]any{"ok": false, "error": msg, "exitCode": exitIO, "check": "io"})
		}
		textesc.Fprintf(stderr, "phtoci: %s\n", msg)
	})
	defer stop()
	swept := fsutil.Swept()
	defer reportSwept(stderr, swept)
	app := newApp(stdin, stdout, stderr)
	var unknown error
	app.CommandNotFound = func(c *cli.Context, name string) {
		unknown = unknownCommand(c, name)
	}
	if n := len(args); n > 1 && args[n-1] == completionFlag {
		// Shell completion asks with the words typed so far; urfave/cli
		// looks for its flag last, so the words are not reordered.
		app.RunContext(ctx, args)
		return exitOK
	}
	err := app.RunContext(ctx, interspersed(app, args))
	if err == nil {
		err = unknown
	}
	if err == nil {
		return exitOK
	}
	if cause := context.Cause(ctx); cause != nil && errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	err = oci.WithoutURLs(err) // upload URLs carry session tokens: name the blob
	code := exitCode(err)
	msg := strings.ReplaceAll(err.Error(), "\n", " ") + limitHint(err)
	if errors.Is(err, oci.ErrUnauthorized) {
		msg += ": log in (see README) or pass --username and --password-stdin"
	}
	if jsonWanted(args) {
		// check: the failed check of a verification error ("user_signature",
		// "limit", …, as serve's verdicts), else the class ("usage", "io").
		cl := train.Classify(err)
		check := cl.Check
		if check == "" {
			check = cl.Kind.String()
		}
		out := map[string]any{"ok": false, "error": msg, "exitCode": code, "check": check}
		var lost *oci.LostUpdateError
		if errors.As(err, &lost) {
			out["lostUpdate"] = map[string]string{"tag": lost.Tag, "pushed": lost.Pushed.String(), "now": lost.Now.String()}
		}
		enc := json.NewEncoder(textesc.NewJSONWriter(stdout))
		enc.Encode(out)
	}
	textesc.Fprintf(stderr, "phtoci: %s\n", msg)
	return code
}

// reportSwept says, in one line, what the run's sweeps removed (layer
// files and spool directories that killed runs left behind), counted
// since before.
func reportSwept(stderr io.Writer, before fsutil.Sweep) {
	now := fsutil.Swept()
	n, b := now.Entries-before.Entries, now.Bytes-before.Bytes
	if n == 0 {
		return
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	fmt.Fprintf(stderr, "phtoci: removed %d leftover temporary file%s of stopped runs (%s)\n", n, plural, units.Bytes(b))
}

// stopGrace is how long a step may take to stop on its own after SIGINT or
// SIGTERM (steps that wait on the network or write files stop at once;
// CPU-bound ones may not look): then, or at a second signal, the
// temporary files are removed (internal/atexit) and the process exits.
const stopGrace = 200 * time.Millisecond

// onSignal returns a context cancelled at the first SIGINT or SIGTERM, and
// makes sure the process is gone, cleaned up, within stopGrace of it
// (unless !bounded) or at once at a second signal, after report.
func onSignal(bounded bool, report func(msg string)) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		var s os.Signal
		select {
		case s = <-sigs:
		case <-done:
			return
		}
		cancel(fmt.Errorf("interrupted by %s", sigName(s)))
		var grace <-chan time.Time // nil: wait for a second signal only
		if bounded {
			grace = time.After(stopGrace)
		}
		select {
		case <-sigs:
		case <-grace:
		case <-done:
			return
		}
		atexit.Run()
		report(fmt.Sprintf("interrupted by %s; stopped and temporary files removed", sigName(s)))
		os.Exit(exitIO)
	}()
	return ctx, func() {
		// Still caught, now ignored: a second Ctrl-C arriving while the
		// command exits on its own (cleaned up) must not kill it with
		// the signal's status instead of its exit code.
		signal.Ignore(os.Interrupt, syscall.SIGTERM)
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

func sigName(s os.Signal) string {
	if s == syscall.SIGTERM {
		return "SIGTERM"
	}
	return "SIGINT"
}

func jsonWanted(args []string) bool {
	for _, a := range args {
		if a == "--json" || a == "-json" || a == "--json=true" {
			return true
		}
	}
	return false
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	cli.HelpFlag = &cli.BoolFlag{Name: "help", Aliases: []string{"h"}, Usage: "show help"}
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version (as phtoci version does)"}
	cli.VersionPrinter = printVersion
	app := &cli.App{
		Name:                  "phtoci",
		Usage:                 "run the Personal Health Train protocol on container images, without a Docker daemon",
		Description:           "IMAGE and DEST are registry references (reg/repo:tag, docker://...), docker-archive:FILE or FILE.tar,\noci-archive:FILE, or oci:DIR[:TAG] / a directory holding an OCI layout.",
		CustomAppHelpTemplate: cli.AppHelpTemplate + exitHelp + "\n",
		Reader:                stdin,
		Writer:                stdout,
		ErrWriter:             stderr,
		Version:               buildVersion().Version,
		EnableBashCompletion:  true,
		Suggest:               true,
		ExitErrHandler:        func(*cli.Context, error) {}, // run() reports errors and picks exit codes
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
		Commands: []*cli.Command{
			preRunCommand(), postRunCommand(), verifyCommand(), decryptCommand(),
			inspectCommand(), buildCommand(), keysCommand(), checkBaseCommand(), serveCommand(),
			versionCommand(), completionCommand(), manCommand(), ledgerCommand(),
		},
	}
	for _, c := range app.Commands {
		addExamples(c)
		setHelp(c)
		setUsageHandler(c)
	}
	return app
}

// setHelp gives c and its subcommands a help text that
// ends with the exit codes; a command with subcommands lists them.
func setHelp(c *cli.Command) {
	if len(c.Subcommands) > 0 {
		// Commands without categories: "phtoci help keys" prints the help
		// of a command urfave/cli has not set up, whose categories are nil.
		t := strings.Replace(cli.SubcommandHelpTemplate, `{{template "visibleCommandCategoryTemplate" .}}`, `{{template "visibleCommandTemplate" .}}`, 1)
		c.CustomHelpTemplate = t + exitHelp + "\n"
	} else {
		c.CustomHelpTemplate = cli.CommandHelpTemplate + exitHelp + "\n"
	}
	for _, s := range c.Subcommands {
		setHelp(s)
	}
}

func setUsageHandler(c *cli.Command) {
	c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	for _, s := range c.Subcommands {
		setUsageHandler(s)
	}
}

// usageError marks errors in how phtoci was called.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// Is makes every usageError a train.ErrUsage for train.Classify.
func (u usageError) Is(target error) bool { return target == train.ErrUsage }

func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// printResult writes v as JSON with --json, else human text from text(),
// whose control characters other than newlines are escaped (values from a
// train, such as station ids, are escaped by textesc.Fprintf, newlines
// too).
func printResult(c *cli.Context, v any, text func(io.Writer)) error {
	if c.Bool("json") {
		enc := json.NewEncoder(textesc.NewJSONWriter(c.App.Writer))
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(textesc.NewWriter(c.App.Writer))
	return nil
}

// interspersed moves a command's flags before its positional arguments, so
// that "phtoci post-run IMAGE --results DIR" works: urfave/cli/v2 stops
// parsing flags at the first positional argument.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	cmds := app.Commands
	i := 1
	var cmd *cli.Command
	for i < len(args) {
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(args[i]) {
				next = c
			}
		}
		if next == nil {
			break
		}
		cmd = next
		out = append(out, args[i])
		cmds = cmd.Subcommands
		i++
	}
	if cmd == nil {
		return args
	}
	bools := map[string]bool{"help": true, "h": true}
	for _, f := range cmd.Flags {
		if _, ok := f.(*cli.BoolFlag); ok {
			for _, n := range f.Names() {
				bools[n] = true
			}
		}
	}
	var flags, pos []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && !bools[name] && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	out = append(out, flags...)
	return append(out, pos...)
}
