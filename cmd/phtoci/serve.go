package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"

	"github.com/phtoci/phtoci/webhook"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "verify every pushed train from registry webhooks (Harbor, distribution) and serve the verdicts",
		Flags: []cli.Flag{&cli.StringFlag{Name: "config", Usage: "serve.yaml (every key: /usr/share/doc/phtoci/serve-config.md, deploy/serve-config.md in the source)"},
			&cli.BoolFlag{Name: "check-config", Usage: "load the config, open the store, ask each registry for /v2/ with the credentials, print what would run; exit 0, or 2 naming the problem"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log lines as `text` or json"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`debug` (adds requests with nothing to do), info (start, verdicts, errors, retries, stop), warn or error"}},
		Action: func(c *cli.Context) error {
			if c.String("config") == "" {
				return usagef("--config serve.yaml is required")
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return usagef("--log-level: want debug, info, warn or error, found %q", c.String("log-level"))
			}
			opts := &slog.HandlerOptions{Level: level}
			var newLogger func(w io.Writer) *slog.Logger
			switch c.String("log-format") {
			case "text":
				newLogger = func(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, opts)) }
			case "json":
				newLogger = func(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, opts)) }
			default:
				return usagef("--log-format: want text or json, found %q", c.String("log-format"))
			}
			logger := newLogger(c.App.ErrWriter)
			cfg, err := webhook.LoadServeConfig(c.String("config"))
			if err != nil {
				return usageError{err}
			}
			if c.Bool("check-config") {
				if err := webhook.CheckConfig(c.Context, cfg, c.App.Writer); err != nil {
					return usageError{err}
				}
				return nil
			}
			cfg.Logger = logger
			cfg.Version = buildVersion().Version
			ready := make(chan string, 1)
			go func() {
				if addr, ok := <-ready; ok {
					// One write: the start-up summary follows the
					// listening line before any request's line can.
					var b bytes.Buffer
					fmt.Fprintf(&b, "phtoci serve: listening on %s\n", addr)
					newLogger(&b).Info("start", append([]any{"version", cfg.Version}, cfg.Summary()...)...)
					c.App.ErrWriter.Write(b.Bytes())
				}
			}()
			return webhook.Run(c.Context, cfg, ready)
		},
	}
}
