package main

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/dircache"
	"github.com/phtoci/phtoci/internal/textesc"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
	"github.com/urfave/cli/v2"
)

// exitCode is train.Classify's kind: usage errors of the CLI's own
// (usageError) match train.ErrUsage.
func exitCode(err error) int {
	switch train.Classify(err).Kind {
	case train.KindOK:
		return exitOK
	case train.KindVerification:
		return exitVerification
	case train.KindUsage:
		return exitUsage
	default:
		return exitIO
	}
}

// flagHints name the flag that changes what an error reports; library
// messages name no flags.
var flagHints = []struct {
	err  error
	hint string
}{
	{oci.ErrLimit, " (raise it with --limit NAME=VALUE)"},
	{oci.ErrPlainHTTP, " (allow it with --insecure)"},
	{oci.ErrUnknownAuthority, " (or give a directory with --cert-dir DIR)"},
	{oci.ErrOutputForm, " (write -o oci-archive:FILE or -o oci:DIR instead)"},
	{oci.ErrPlatform, " (choose one with --platform OS/ARCH[/VARIANT])"},
	{train.ErrResultsRequired, " (--results DIR)"},
	{train.ErrLeak, " (drop that layer with --base-layers, or post-run the image as received with --results)"},
	{train.ErrAlreadyProcessed, " (phtoci ledger list shows the ledger; phtoci ledger forget TRAIN --yes lets this station run the train again)"},
}

// limitHint tells which flag changes what err reports: how to raise a
// limit an image broke, allow plain HTTP, choose a platform.
func limitHint(err error) string {
	for _, h := range flagHints {
		if errors.Is(err, h.err) {
			return h.hint
		}
	}
	return ""
}

// Flags shared by every command that reads or writes images.
func imageFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "machine-readable output on stdout"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"},
		&cli.StringFlag{Name: "progress", Value: "auto", Usage: "progress bars on stderr: `auto` (on a terminal, not with --json), always, never"},
		&cli.StringFlag{Name: "platform", Usage: "platform to pick from a multi-platform index, `OS/ARCH[/VARIANT]`"},
		&cli.BoolFlag{Name: "insecure", Usage: "do not verify registries' TLS certificates and allow plain HTTP to any registry (without it certificates are always verified, and plain HTTP is tried only for 127.0.0.1, ::1 and localhost, after HTTPS); prefer --cert-dir"},
		&cli.StringFlag{Name: "cert-dir", Usage: "`DIR` of *.crt CA certificates and *.cert/*.key client certificates for registries (as podman and skopeo; /etc/containers/certs.d/HOST[:PORT]/ and /etc/docker/certs.d/HOST[:PORT]/ are always read)"},
		&cli.StringFlag{Name: "username", Usage: "registry user (default: Docker config and credential helpers)", EnvVars: []string{"PHTOCI_USERNAME"}},
		&cli.BoolFlag{Name: "password-stdin", Usage: "read the registry password from standard input"},
		&cli.StringFlag{Name: "authfile", Usage: "registry credentials `FILE` as podman and skopeo write it (default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json (root: /run/containers/0/auth.json), ~/.config/containers/auth.json, then ~/.docker/config.json and credential helpers)"},
		&cli.StringFlag{Name: "tmpdir", Usage: "directory for spool files (a new layer for an oci-archive or oci: output is made beside the output, which takes it over)", EnvVars: []string{"PHTOCI_TMPDIR"}},
		&cli.StringFlag{Name: "trust", Usage: "trust store `FILE` pinning creator, builder and station keys and master images", EnvVars: []string{"PHTOCI_TRUST"}},
		&cli.BoolFlag{Name: "check-base", Usage: "also run the master image check (as check-base does) before the step"},
		&cli.StringSliceFlag{Name: "limit", Usage: "raise a limit on what an image may cost, `NAME=VALUE` (repeatable; names and defaults in the README, \"Limits\")", EnvVars: []string{"PHTOCI_LIMITS"}},
		&cli.DurationFlag{Name: "stall-timeout", Value: oci.DefaultStallTimeout, Usage: "time a registry connection may make no progress before the transfer is retried (3 times, then exit 3)", EnvVars: []string{"PHTOCI_STALL_TIMEOUT"}},
		&cli.StringFlag{Name: "cache", Usage: "`DIR` of layer summaries, so that base layers are read once per machine (default $XDG_CACHE_HOME/phtoci, ~/.cache/phtoci; \"none\": no cache)", EnvVars: []string{"PHTOCI_CACHE"}},
	}
}

// summaryCache opens the layer summary cache --cache names; a directory
// that cannot be used gives a warning and no cache.
func summaryCache(c *cli.Context) layer.SummaryCache {
	dir := c.String("cache")
	if dir == "none" {
		return nil
	}
	warn := func(err error) {
		textesc.Fprintf(c.App.ErrWriter, "phtoci: warning: %v; continuing without the layer summary cache\n", err)
	}
	if dir == "" {
		d, err := dircache.DefaultDir()
		if err != nil {
			warn(err)
			return nil
		}
		dir = d
	}
	dc, err := dircache.Open(dir, 0, warn)
	if err != nil {
		warn(err)
		return nil
	}
	return dc
}

// masterFlag names the master image of the master image check.
func masterFlag() cli.Flag {
	return &cli.StringFlag{Name: "master", Usage: "master `IMAGE` (file, layout or registry reference) for the master image check, which it turns on (default: a trust store masters entry's location, else the config's source.address:source.tag)"}
}

// compressionFlag chooses how a command stores the layer it writes.
func compressionFlag() cli.Flag {
	return &cli.StringFlag{Name: "compression", Value: "auto", Usage: "new layer: `auto` (plain tar for oci-archive and oci:; gzip of stored blocks for docker-archive unless its first layer is plain, and streamed to registries), none, stored, or fast (gzip level 1, for compressible results over slow links)"}
}

var compressions = map[string]train.Compression{
	"auto": train.CompressionAuto, "none": train.CompressionNone,
	"stored": train.CompressionStored, "fast": train.CompressionFast,
}

func stationFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "station", Usage: "this station's id on the route", EnvVars: []string{"STATION_ID"}},
		&cli.StringFlag{Name: "key", Usage: "the station's private key (PEM)", EnvVars: []string{"PRIVATE_KEY_PATH"}},
		&cli.StringFlag{Name: "key-password-file", Usage: "file holding the key's password (or env PRIVATE_KEY_PASSWORD)"},
	}
}

func env(c *cli.Context) (train.Env, error) {
	e := train.Env{Options: train.Options{TempDir: c.String("tmpdir")}}
	if c.IsSet("base-layers") {
		e.BaseLayers = c.Int("base-layers")
	}
	e.OCI.Insecure = c.Bool("insecure")
	e.OCI.TempDir = c.String("tmpdir")
	if d := c.Duration("stall-timeout"); d > 0 {
		e.OCI.StallTimeout = d
	} else if c.IsSet("stall-timeout") {
		return e, usagef("--stall-timeout %s: want a positive duration such as 60s", d)
	}
	e.SummaryCache = summaryCache(c)
	if f := c.String("authfile"); f != "" {
		if _, err := os.Stat(f); err != nil {
			return e, usagef("--authfile: %v", err)
		}
	}
	e.OCI.Keychain = oci.ContainersKeychain(c.String("authfile"))
	if d := c.String("cert-dir"); d != "" {
		if _, err := os.ReadDir(d); err != nil {
			return e, usagef("--cert-dir: %v", err)
		}
		e.OCI.CertDir = d
	}
	e.CheckBase = c.Bool("check-base")
	e.Master = c.String("master")
	if v := c.String("compression"); v != "" {
		comp, ok := compressions[v]
		if !ok {
			return e, usagef("--compression %q: want auto, none, stored or fast", v)
		}
		e.Compression = comp
	}
	for _, l := range c.StringSlice("limit") {
		name, value, _ := strings.Cut(l, "=")
		if err := e.SetLimit(name, value); err != nil {
			return e, usagef("--limit: %v", err)
		}
	}
	if p := c.String("trust"); p != "" {
		st, err := trust.Load(p)
		if err != nil {
			return e, usagef("--trust: %v", err)
		}
		e.Trust = st
	}
	switch p := c.String("progress"); {
	case p != "auto" && p != "always" && p != "never" && p != "":
		return e, usagef("--progress %q: want auto, always or never", p)
	case c.Bool("quiet") || p == "never":
	case p == "always":
		e.OCI.Progress, e.OCI.ProgressAlways = c.App.ErrWriter, true
	case !c.Bool("json"):
		e.OCI.Progress = c.App.ErrWriter
	}
	if p := c.String("platform"); p != "" {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return e, usagef("--platform %q: %v", p, err)
		}
		e.OCI.Platform = plat
	}
	if u := c.String("username"); u != "" || c.Bool("password-stdin") {
		if u == "" || !c.Bool("password-stdin") {
			return e, usagef("--username and --password-stdin go together")
		}
		b, err := io.ReadAll(io.LimitReader(c.App.Reader, 64<<10))
		if err != nil {
			return e, fmt.Errorf("reading password from stdin: %w", err)
		}
		e.OCI.Auth = oci.BasicAuth(u, strings.TrimRight(string(b), "\r\n"))
	}
	return e, nil
}

// loadKey reads the private key named by --FLAG; its password comes from
// --FLAG-password-file or from the environment variable passEnv.
func loadKey(c *cli.Context, flag, passEnv string) (*rsa.PrivateKey, error) {
	path := c.String(flag)
	if path == "" {
		return nil, usagef("--%s is required", flag)
	}
	pass, err := password(c, flag+"-password-file", passEnv)
	if err != nil {
		return nil, err
	}
	k, err := keys.LoadPrivateKey(path, pass)
	if err != nil {
		return nil, err
	}
	if err := keys.CheckPrivateKeyFile(path); errors.Is(err, keys.ErrKeyFileMode) {
		textesc.Fprintf(c.App.ErrWriter, "phtoci: warning: %v; restrict it: chmod 600 %s\n", err, path)
	}
	return k, nil
}

func password(c *cli.Context, fileFlag, passEnv string) ([]byte, error) {
	if f := c.String(fileFlag); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", fileFlag, err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if passEnv != "" {
		if p, ok := os.LookupEnv(passEnv); ok {
			return []byte(p), nil
		}
	}
	return nil, nil
}

func station(c *cli.Context) (protocol.Station, error) {
	id := c.String("station")
	if id == "" {
		return protocol.Station{}, usagef("--station (or STATION_ID) is required")
	}
	k, err := loadKey(c, "key", "PRIVATE_KEY_PASSWORD")
	if err != nil {
		return protocol.Station{}, err
	}
	return protocol.Station{ID: id, Key: k}, nil
}

func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("%s expects exactly one %s, got %d arguments", c.Command.Name, what, c.NArg())
	}
	return c.Args().First(), nil
}

// printJob prints what a step wrote; notes are lines of text output after
// the first two.
func printJob(c *cli.Context, r *train.JobResult, notes ...string) error {
	return printResult(c, r, func(w io.Writer) {
		textesc.Fprintf(w, "%s", r.Step)
		if r.Station != "" {
			textesc.Fprintf(w, " (station %s)", r.Station)
		}
		if r.DryRun {
			printDryRun(w, r)
			return
		}
		textesc.Fprintf(w, ": wrote %s\n  digest %s\n", r.Output, r.Digest)
		for _, n := range notes {
			textesc.Fprintf(w, "  %s\n", n)
		}
		if r.Platform != "" {
			textesc.Fprintf(w, "  from %s\n", r.Platform)
		}
		if r.ResultsDir != "" {
			textesc.Fprintf(w, "  previous results in %s (mount it as /opt/pht_results)\n", r.ResultsDir)
		}
		if r.Step == "pre-run" {
			return
		}
		if r.Next >= 0 && r.NextStation != "" {
			textesc.Fprintf(w, "  next station: %s (route[%d])\n", r.NextStation, r.Next)
		} else if r.Next >= 0 {
			textesc.Fprintf(w, "  next station: route[%d]\n", r.Next)
		} else if r.Step == "post-run" {
			textesc.Fprintf(w, "  route complete: ready for the researcher\n")
		}
	})
}

func preRunCommand() *cli.Command {
	return &cli.Command{
		Name:      "pre-run",
		Usage:     "verify a train for this station and write the decrypted, runnable image",
		ArgsUsage: "IMAGE",
		Flags: append(append(imageFlags(), stationFlags()...),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "destination (default: in the current directory, mode 0600: REPOSITORY_TAG.decrypted.oci.tar for a registry input, never a push; NAME-decrypted.tar for an archive NAME.tar, never beside it; TAG-decrypted in a layout)"},
			&cli.StringFlag{Name: "results-dir", Usage: "also write the decrypted previous results (the image's /opt/pht_results) into `DIR` (new or empty; 0700, files 0600), to mount as /opt/pht_results for the run"},
			&cli.IntFlag{Name: "base-layers", Usage: "override the base boundary (number of base layers to keep)"},
			compressionFlag(), ledgerFlag(), masterFlag(), dryRunFlag()),
		Action: func(c *cli.Context) error {
			in, err := oneArg(c, "IMAGE")
			if err != nil {
				return err
			}
			st, err := station(c)
			if err != nil {
				return err
			}
			e, err := env(c)
			if err != nil {
				return err
			}
			e.DryRun = c.Bool("dry-run")
			if err := stationLedger(c, &e, false); err != nil {
				return err
			}
			e.PreviousResultsDir = c.String("results-dir")
			warnPlaintextPush(c, c.String("output"))
			r, err := train.PreRunJob(c.Context, in, c.String("output"), st, e)
			if err != nil {
				return err
			}
			if c.String("output") == "" {
				// The default: plaintext in the current directory, never
				// beside the input (a train's USB stick) or in a registry.
				wd, _ := os.Getwd()
				return printJob(c, r, fmt.Sprintf("plaintext (mode 0600) in the current directory %s; -o DEST writes it elsewhere", wd))
			}
			return printJob(c, r)
		},
	}
}

// warnPlaintextPush warns on stderr when pre-run's output is a registry
// on another host: the decrypted image is plaintext.
func warnPlaintextPush(c *cli.Context, output string) {
	if output == "" {
		return
	}
	ref, err := oci.ParseOutputRef(output)
	if err != nil || ref.Name() == nil || ref.Loopback() {
		return
	}
	textesc.Fprintf(c.App.ErrWriter, "phtoci: warning: pushing the decrypted image to %s: the train files and previous results in it are plaintext, readable by everyone who can pull from that repository\n", ref.Name())
}

func postRunCommand() *cli.Command {
	return &cli.Command{
		Name:      "post-run",
		Usage:     "hash, sign and re-encrypt the results for the next station and the researcher",
		ArgsUsage: "IMAGE",
		Flags: append(append(imageFlags(), stationFlags()...),
			&cli.StringFlag{Name: "results", Usage: "the results directory of the run: the complete new /opt/pht_results (previous results the run kept plus its own; regular files and directories only, no symlinks); omit when IMAGE holds plaintext results"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "destination (default: the same registry reference, or FILE-STATION.tar beside an archive)"},
			&cli.IntFlag{Name: "base-layers", Usage: "override the base boundary (number of base layers to keep)"},
			compressionFlag(), ledgerFlag(), masterFlag(), dryRunFlag()),
		Action: func(c *cli.Context) error {
			in, err := oneArg(c, "IMAGE")
			if err != nil {
				return err
			}
			st, err := station(c)
			if err != nil {
				return err
			}
			e, err := env(c)
			if err != nil {
				return err
			}
			e.DryRun = c.Bool("dry-run")
			if err := stationLedger(c, &e, !e.DryRun); err != nil {
				return err
			}
			r, err := train.PostRunJob(c.Context, in, c.String("results"), c.String("output"), st, e)
			if err != nil {
				return err
			}
			return printJob(c, r)
		},
	}
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "verify a train without any key (with --station and --key: also this station's checks)",
		ArgsUsage: "IMAGE",
		Flags:     append(append(imageFlags(), stationFlags()...), masterFlag()),
		Action: func(c *cli.Context) error {
			in, err := oneArg(c, "IMAGE")
			if err != nil {
				return err
			}
			e, err := env(c)
			if err != nil {
				return err
			}
			var st *protocol.Station
			if c.String("station") != "" || c.String("key") != "" {
				s, err := station(c)
				if err != nil {
					return err
				}
				st = &s
			}
			r, err := train.VerifyJob(c.Context, in, st, e)
			if err != nil {
				return err
			}
			done := []string{}
			for _, i := range r.Status.Done {
				done = append(done, routeName(r.Route, i))
			}
			out := map[string]any{"ok": true, "done": nonNil(r.Status.Done), "done_stations": done, "next": r.Status.Next,
				"route": nonNil(r.Route), "checked": r.Checked, "not_checked": r.NotChecked}
			if r.Status.Next >= 0 {
				out["next_station"] = routeName(r.Route, r.Status.Next)
			}
			if r.Station != "" {
				out["station"], out["station_state"] = r.Station, r.StationState
			}
			if r.Index != "" {
				out["index"], out["children"] = r.Index, r.Children
			}
			return printResult(c, out, func(w io.Writer) {
				textesc.Fprintf(w, "verified: %s checked; %d of %d station(s) signed", strings.Join(r.Checked, ", "), len(r.Status.Done), len(r.Route))
				if len(done) > 0 {
					textesc.Fprintf(w, " (%s)", strings.Join(done, ", "))
				}
				if r.Status.Next >= 0 {
					textesc.Fprintf(w, ", next station: %s (route[%d])", routeName(r.Route, r.Status.Next), r.Status.Next)
				} else {
					textesc.Fprintf(w, ", route complete")
				}
				switch {
				case r.StationState != nil && r.StationState.State != "next":
					textesc.Fprintf(w, "; %s", r.StationState.Message)
				case r.Station != "":
					textesc.Fprintf(w, "; station %s checks passed", r.Station)
				}
				fmt.Fprintln(w)
				for _, ch := range r.Children {
					fmt.Fprintf(w, "  index %s: %s %s %s\n", r.Index, ch.Platform, ch.Digest, ch.Status)
				}
				for _, n := range r.NotChecked {
					if strings.HasPrefix(n, train.CheckFileContents) {
						n += ": phtoci verify --station ID --key KEY"
					}
					textesc.Fprintf(w, "  not checked: %s\n", n)
				}
			})
		},
	}
}

// routeName names route position i as its station id.
func routeName(route []string, i int) string {
	if i >= 0 && i < len(route) {
		return route[i]
	}
	return fmt.Sprintf("route[%d]", i)
}

// nonNil makes a nil slice encode as [] in --json.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func decryptCommand() *cli.Command {
	return &cli.Command{
		Name:      "decrypt",
		Usage:     "the researcher's end of the route: verify everything, then write the results",
		ArgsUsage: "IMAGE",
		Flags: append(imageFlags(),
			&cli.StringFlag{Name: "key", Usage: "the creator's private key (PEM)"},
			&cli.StringFlag{Name: "key-password-file", Usage: "file holding the key's password (or env PRIVATE_KEY_PASSWORD)"},
			&cli.StringFlag{Name: "out", Usage: "new directory for the results (pht_results/) and, with --train, the train files (pht_train/)"},
			&cli.BoolFlag{Name: "train", Usage: "also write the decrypted train files"}),
		Action: func(c *cli.Context) error {
			in, err := oneArg(c, "IMAGE")
			if err != nil {
				return err
			}
			if c.String("out") == "" {
				return usagef("--out DIR is required")
			}
			k, err := loadKey(c, "key", "PRIVATE_KEY_PASSWORD")
			if err != nil {
				return err
			}
			e, err := env(c)
			if err != nil {
				return err
			}
			r, err := train.DecryptJob(c.Context, in, k, c.String("out"), c.Bool("train"), e)
			if err != nil {
				return err
			}
			if !r.Complete {
				textesc.Fprintf(c.App.ErrWriter, "phtoci: warning: incomplete route: %d of %d station(s) signed; no results yet from %s\n",
					len(r.Done), len(r.Route), strings.Join(r.Pending, ", "))
			}
			return printResult(c, struct {
				OK bool `json:"ok"`
				*train.DecryptResult
			}{true, r}, func(w io.Writer) {
				if r.Complete {
					textesc.Fprintf(w, "verified and decrypted: results of all %d station(s) in %s\n", len(r.Route), r.Out)
				} else {
					textesc.Fprintf(w, "verified and decrypted: results of %d of %d station(s) (%s) in %s; route incomplete\n", len(r.Done), len(r.Route), strings.Join(r.Done, ", "), r.Out)
				}
			})
		},
	}
}
