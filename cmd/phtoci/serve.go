package main

import (
	"fmt"
	"log/slog"

	"github.com/phtoci/phtoci/webhook"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "verify every pushed train from registry webhooks (Harbor, distribution) and serve the verdicts",
		Flags: []cli.Flag{&cli.StringFlag{Name: "config", Usage: "serve.yaml (see the README, \"Registry webhooks\")"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log lines (one per event and per verdict) as `text` or json"}},
		Action: func(c *cli.Context) error {
			if c.String("config") == "" {
				return usagef("--config serve.yaml is required")
			}
			cfg, err := webhook.LoadServeConfig(c.String("config"))
			if err != nil {
				return usageError{err}
			}
			switch c.String("log-format") {
			case "text":
				cfg.Logger = slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
			case "json":
				cfg.Logger = slog.New(slog.NewJSONHandler(c.App.ErrWriter, nil))
			default:
				return usagef("--log-format: want text or json, found %q", c.String("log-format"))
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
