package main

import (
	"fmt"
	"io"

	"github.com/phtoci/phtoci/internal/textesc"
	"github.com/phtoci/phtoci/internal/units"
	"github.com/phtoci/phtoci/train"
	"github.com/urfave/cli/v2"
)

// ledgerFlag is the station ledger of pre-run, post-run and ledger.
func ledgerFlag() cli.Flag {
	return &cli.StringFlag{Name: "ledger", EnvVars: []string{"PHTOCI_LEDGER"},
		Usage: "station ledger `FILE` of the trains this station signed, refusing replays (default $XDG_STATE_HOME/phtoci/ledger.jsonl or ~/.local/state/phtoci/ledger.jsonl; its directory must be this user's alone; none: off, and post-run signs without replay protection)"}
}

// stationLedger sets e.Ledger from --ledger (train.OpenLedger). post-run
// (writes) does not sign without a usable ledger unless --ledger none is
// given; pre-run, which signs nothing, goes on without the default ledger
// when it cannot be used, with a warning.
func stationLedger(c *cli.Context, e *train.Env, writes bool) error {
	p := c.String("ledger")
	if p == "none" {
		return nil
	}
	l, err := train.OpenLedger(p)
	switch {
	case err == nil:
		e.Ledger = l
		return nil
	case writes:
		return fmt.Errorf("%w; a station signs only what its ledger records (give --ledger FILE, or --ledger none to sign without replay protection)", err)
	case p == "":
		textesc.Fprintf(c.App.ErrWriter, "phtoci: warning: no station ledger (%v): replays of trains this station signed are not refused here; give --ledger FILE\n", err)
		return nil
	}
	return err
}

// openLedger is --ledger for the ledger commands.
func openLedger(c *cli.Context) (*train.Ledger, error) {
	if c.String("ledger") == "none" {
		return nil, usagef("--ledger none: there is no ledger to show")
	}
	return train.OpenLedger(c.String("ledger"))
}

func ledgerCommand() *cli.Command {
	return &cli.Command{
		Name:  "ledger",
		Usage: "list or forget the trains this station's ledger records as signed",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list the ledger's entries, oldest first, and name its file",
				Flags: []cli.Flag{ledgerFlag(), &cli.BoolFlag{Name: "json", Usage: "machine-readable output on stdout"}},
				Action: func(c *cli.Context) error {
					l, err := openLedger(c)
					if err != nil {
						return err
					}
					entries, err := l.Entries()
					if err != nil {
						return err
					}
					if entries == nil {
						entries = []train.LedgerEntry{}
					}
					return printResult(c, map[string]any{"ledger": l.Path, "entries": entries}, func(w io.Writer) {
						textesc.Fprintf(w, "station ledger %s: %d entr%s\n", l.Path, len(entries), plural(len(entries), "y", "ies"))
						for _, e := range entries {
							printLedgerEntry(w, e)
						}
					})
				},
			},
			{
				Name:      "forget",
				Usage:     "remove a train's entries (by train id or session id), so that this station may run it again",
				ArgsUsage: "TRAIN",
				Flags: []cli.Flag{ledgerFlag(), &cli.BoolFlag{Name: "json", Usage: "machine-readable output on stdout"},
					&cli.BoolFlag{Name: "yes", Usage: "really remove them: the station will then sign that train again"}},
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "TRAIN")
					if err != nil {
						return err
					}
					l, err := openLedger(c)
					if err != nil {
						return err
					}
					if !c.Bool("yes") {
						return usagef("ledger forget removes train %q from station ledger %s, after which this station signs it again: give --yes", id, l.Path)
					}
					gone, err := l.Forget(id)
					if err != nil {
						return err
					}
					return printResult(c, map[string]any{"ledger": l.Path, "removed": gone}, func(w io.Writer) {
						textesc.Fprintf(w, "removed %d entr%s from station ledger %s:\n", len(gone), plural(len(gone), "y", "ies"), l.Path)
						for _, e := range gone {
							printLedgerEntry(w, e)
						}
					})
				},
			},
		},
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func printLedgerEntry(w io.Writer, e train.LedgerEntry) {
	state := "signed"
	if e.Pending {
		state = fmt.Sprintf("pending (pid %d)", e.PID)
	}
	// %q: ids come from trains, which may hold control characters.
	textesc.Fprintf(w, "  %s  train %q  station %q route[%d]  %s  input %q\n    session %q\n",
		e.Time.UTC().Format("2006-01-02T15:04:05Z"), e.TrainID, e.Station, e.Index, state, e.Digest, e.SessionID)
}

// dryRunFlag is --dry-run of pre-run and post-run.
func dryRunFlag() cli.Flag {
	return &cli.BoolFlag{Name: "dry-run", Usage: "run every check and make the new layer (in a temporary file), then say what would be written and its size: nothing is written, nothing recorded in the ledger"}
}

// printDryRun ends printJob's line for a dry run.
func printDryRun(w io.Writer, r *train.JobResult) {
	textesc.Fprintf(w, ": dry run: every check passed; would write %s\n  size %s (%d bytes; new layer %s)\n",
		r.Output, units.Bytes(r.Size), r.Size, units.Bytes(r.LayerSize))
	if r.Step == "post-run" {
		if r.Next >= 0 && r.NextStation != "" {
			textesc.Fprintf(w, "  next station: %s (route[%d])\n", r.NextStation, r.Next)
		} else if r.Next < 0 {
			textesc.Fprintf(w, "  route complete after this station\n")
		}
	}
	textesc.Fprintf(w, "  nothing written, nothing recorded in the station ledger\n")
}
