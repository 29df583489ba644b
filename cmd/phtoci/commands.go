package main

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
	"github.com/urfave/cli/v2"
)

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, train.ErrUsage), errors.Is(err, train.ErrResultsRequired),
		errors.Is(err, oci.ErrUnknownTransport), errors.Is(err, oci.ErrAmbiguous), errors.Is(err, oci.ErrWouldOverwrite),
		errors.Is(err, keys.ErrWrongPassword), errors.Is(err, keys.ErrPasswordRequired), errors.Is(err, protocol.ErrBuild):
		return exitUsage
	case errors.Is(err, protocol.ErrVerification), errors.Is(err, protocol.ErrInvalidConfig), errors.Is(err, oci.ErrLimit),
		errors.Is(err, train.ErrLeak), errors.Is(err, train.ErrNotATrain), errors.Is(err, train.ErrAlreadyDecrypted),
		errors.Is(err, layer.ErrUnsafeEntry), errors.Is(err, train.ErrAlreadyProcessed):
		return exitVerification
	default:
		return exitIO
	}
}

// limitHint tells how to raise a limit an image broke.
func limitHint(err error) string {
	if errors.Is(err, oci.ErrLimit) {
		return " (raise it with --limit NAME=VALUE)"
	}
	return ""
}

// Flags shared by every command that reads or writes images.
func imageFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "machine-readable output on stdout"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"},
		&cli.StringFlag{Name: "platform", Usage: "platform to pick from a multi-platform index, `OS/ARCH[/VARIANT]`"},
		&cli.BoolFlag{Name: "insecure", Usage: "allow plain HTTP and unverified TLS for registries (always on for 127.0.0.1 and localhost)"},
		&cli.StringFlag{Name: "username", Usage: "registry user (default: Docker config and credential helpers)", EnvVars: []string{"PHTOCI_USERNAME"}},
		&cli.BoolFlag{Name: "password-stdin", Usage: "read the registry password from standard input"},
		&cli.StringFlag{Name: "tmpdir", Usage: "directory for spool files (a new layer for an oci-archive or oci: output is made beside the output, which takes it over)", EnvVars: []string{"PHTOCI_TMPDIR"}},
		&cli.StringFlag{Name: "trust", Usage: "trust store `FILE` pinning creator, builder and station keys and master images", EnvVars: []string{"PHTOCI_TRUST"}},
		&cli.BoolFlag{Name: "check-base", Usage: "also run the master image check (as check-base does) before the step"},
		&cli.StringSliceFlag{Name: "limit", Usage: "raise a limit on what an image may cost, `NAME=VALUE` (repeatable; names and defaults in the README, \"Limits\")", EnvVars: []string{"PHTOCI_LIMITS"}},
		&cli.DurationFlag{Name: "stall-timeout", Value: oci.DefaultStallTimeout, Usage: "time a registry connection may make no progress before the transfer is retried (3 times, then exit 3)", EnvVars: []string{"PHTOCI_STALL_TIMEOUT"}},
	}
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
	e.CheckBase = c.Bool("check-base")
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
	if !c.Bool("quiet") && !c.Bool("json") {
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
		fmt.Fprintf(c.App.ErrWriter, "phtoci: warning: %v; restrict it: chmod 600 %s\n", err, path)
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

// ledgerFlag is the station ledger of pre-run and post-run.
func ledgerFlag() cli.Flag {
	return &cli.StringFlag{Name: "ledger", EnvVars: []string{"PHTOCI_LEDGER"},
		Usage: "station ledger `FILE` of the trains this station signed, refusing replays (default $XDG_STATE_HOME/phtoci/ledger.jsonl or ~/.local/state/phtoci/ledger.jsonl; none: off)"}
}

// stationLedger sets e.Ledger from --ledger. An explicit FILE must work;
// the default one is skipped with a warning where it cannot be (no home
// directory, or for post-run, which writes it, a directory it cannot
// write: a read-only container), so that a run is never lost to it.
func stationLedger(c *cli.Context, e *train.Env, writes bool) error {
	p := c.String("ledger")
	switch p {
	case "none":
		return nil
	case "":
		var err error
		if p, err = train.DefaultLedgerPath(); err == nil && writes {
			err = writableDir(filepath.Dir(p))
		}
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "phtoci: warning: no station ledger (%v): replays of trains this station signed are not refused; give --ledger FILE\n", err)
			return nil
		}
	}
	e.Ledger = &train.Ledger{Path: p}
	return nil
}

// writableDir creates dir (0700) and checks that a file can be made in it.
func writableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("%s expects exactly one %s, got %d arguments", c.Command.Name, what, c.NArg())
	}
	return c.Args().First(), nil
}

func printJob(c *cli.Context, r *train.JobResult) error {
	return printResult(c, r, func(w io.Writer) {
		fmt.Fprintf(w, "%s", r.Step)
		if r.Station != "" {
			fmt.Fprintf(w, " (station %s)", r.Station)
		}
		fmt.Fprintf(w, ": wrote %s\n  digest %s\n", r.Output, r.Digest)
		if r.ResultsDir != "" {
			fmt.Fprintf(w, "  previous results in %s (mount it as /opt/pht_results)\n", r.ResultsDir)
		}
		if r.Step == "pre-run" {
			return
		}
		if r.Next >= 0 {
			fmt.Fprintf(w, "  next station: route index %d\n", r.Next)
		} else if r.Step == "post-run" {
			fmt.Fprintf(w, "  route complete: ready for the researcher\n")
		}
	})
}

func preRunCommand() *cli.Command {
	return &cli.Command{
		Name:      "pre-run",
		Usage:     "verify a train for this station and write the decrypted, runnable image",
		ArgsUsage: "IMAGE",
		Flags: append(append(imageFlags(), stationFlags()...),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "destination (default: REPOSITORY_TAG.decrypted.oci.tar in the current directory for a registry input, never a push; FILE-decrypted.tar beside an archive; TAG-decrypted in a layout)"},
			&cli.StringFlag{Name: "results-dir", Usage: "also write the decrypted previous results (the image's /opt/pht_results) into `DIR` (new or empty; 0700, files 0600), to mount as /opt/pht_results for the run"},
			&cli.IntFlag{Name: "base-layers", Usage: "override the base boundary (number of base layers to keep)"},
			compressionFlag(), ledgerFlag()),
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
			if err := stationLedger(c, &e, false); err != nil {
				return err
			}
			e.PreviousResultsDir = c.String("results-dir")
			warnPlaintextPush(c, c.String("output"))
			r, err := train.PreRunJob(c.Context, in, c.String("output"), st, e)
			if err != nil {
				return err
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
	if err != nil || ref.Transport != oci.TransportRegistry || ref.Loopback() {
		return
	}
	fmt.Fprintf(c.App.ErrWriter, "phtoci: warning: pushing the decrypted image to %s: the train files and previous results in it are plaintext, readable by everyone who can pull from that repository\n", ref.Name)
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
			compressionFlag(), ledgerFlag()),
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
			if err := stationLedger(c, &e, true); err != nil {
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
		Flags:     append(imageFlags(), stationFlags()...),
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
			return printResult(c, map[string]any{"ok": true, "done": r.Status.Done, "next": r.Status.Next, "station": r.Station, "station_state": r.StationState}, func(w io.Writer) {
				fmt.Fprintf(w, "verified: %d station(s) signed", len(r.Status.Done))
				if r.Status.Next >= 0 {
					fmt.Fprintf(w, ", next route index %d", r.Status.Next)
				} else {
					fmt.Fprintf(w, ", route complete")
				}
				switch {
				case r.StationState != nil && r.StationState.State != "next":
					fmt.Fprintf(w, "; %s", r.StationState.Message)
				case r.Station != "":
					fmt.Fprintf(w, "; station %s checks passed", r.Station)
				}
				fmt.Fprintln(w)
			})
		},
	}
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
			if err := train.DecryptJob(c.Context, in, k, c.String("out"), c.Bool("train"), e); err != nil {
				return err
			}
			return printResult(c, map[string]any{"ok": true, "out": c.String("out")}, func(w io.Writer) {
				fmt.Fprintf(w, "verified and decrypted: results in %s\n", c.String("out"))
			})
		},
	}
}
