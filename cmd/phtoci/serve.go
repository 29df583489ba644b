package main

import (
	"fmt"

	"github.com/phtoci/phtoci/webhook"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "verify every pushed train from registry webhooks (Harbor, distribution) and serve the verdicts",
		Flags: []cli.Flag{&cli.StringFlag{Name: "config", Usage: "serve.yaml (see the README, \"Registry webhooks\")"}},
		Action: func(c *cli.Context) error {
			if c.String("config") == "" {
				return usagef("--config serve.yaml is required")
			}
			cfg, err := webhook.LoadServeConfig(c.String("config"))
			if err != nil {
				return usageError{err}
			}
			ready := make(chan string, 1)
			go func() {
				if addr, ok := <-ready; ok {
					fmt.Fprintf(c.App.ErrWriter, "phtoci serve: listening on %s\n", addr)
				}
			}()
			return webhook.Run(c.Context, cfg, ready)
		},
	}
}
