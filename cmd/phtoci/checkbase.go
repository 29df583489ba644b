package main

import (
	"io"

	"github.com/phtoci/phtoci/internal/textesc"
	"github.com/phtoci/phtoci/train"
	"github.com/urfave/cli/v2"
)

func checkBaseCommand() *cli.Command {
	return &cli.Command{
		Name:      "check-base",
		Usage:     "check that a train is its master image plus train paths only (MASTER default: the config's source.address:source.tag)",
		ArgsUsage: "TRAIN [MASTER]",
		Flags:     imageFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return usagef("check-base expects TRAIN [MASTER], got %d arguments", c.NArg())
			}
			e, err := env(c)
			if err != nil {
				return err
			}
			r, err := train.CheckBaseJob(c.Context, c.Args().Get(0), c.Args().Get(1), e)
			if err != nil {
				return err
			}
			return printResult(c, r, func(w io.Writer) {
				textesc.Fprintf(w, "base ok: the train's first %d layers are the master's; the %d layer(s) above touch only train paths; config matches\n",
					r.MasterLayers, r.TrainLayers-r.MasterLayers)
			})
		},
	}
}
