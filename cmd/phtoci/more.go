package main

import (
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/phtoci/phtoci/internal/textesc"
	"github.com/phtoci/phtoci/internal/units"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
	"github.com/urfave/cli/v2"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show a train's config, route with per-station state, layers and base boundary",
		ArgsUsage: "IMAGE",
		Flags:     imageFlags(),
		Action: func(c *cli.Context) error {
			in, err := oneArg(c, "IMAGE")
			if err != nil {
				return err
			}
			e, err := env(c)
			if err != nil {
				return err
			}
			r, err := train.InspectJob(c.Context, in, e)
			if err != nil {
				return err
			}
			return printResult(c, r, func(w io.Writer) {
				src := r.Source
				if src == "" {
					src = "(not recorded)"
				}
				textesc.Fprintf(w, "image    %s (%s)\ntrain    %s\nsource   %s\nstate    %s\ncreator  %s %s\nbuilder  %s\n",
					r.Digest, r.MediaType, r.TrainID, src, r.State, r.Creator, r.CreatorKey, r.BuilderKey)
				if r.Verified {
					textesc.Fprintf(w, "verify   ok (keyless)\n")
				} else {
					textesc.Fprintf(w, "verify   FAILED: %s\n", r.VerifyError)
				}
				textesc.Fprintf(w, "route:\n  %-5s %-20s %-6s %-8s %s\n", "INDEX", "STATION", "ECO", "STATE", "KEY")
				for _, s := range r.Route {
					textesc.Fprintf(w, "  %-5d %-20s %-6s %-8s %s\n", s.Index, s.Station, s.EcoSystem, s.State, s.KeyFingerprint)
				}
				from := "scan"
				if r.BaseFromLabel {
					from = "label"
				}
				textesc.Fprintf(w, "layers (base boundary %d, from %s):\n  %-5s %-8s %-71s %10s %s\n", r.Base, from, "INDEX", "ROLE", "DIGEST", "SIZE", "MEDIA TYPE")
				for _, l := range r.Layers {
					textesc.Fprintf(w, "  %-5d %-8s %-71s %10s %s\n", l.Index, l.Role, l.Digest, units.Bytes(l.Size), l.MediaType)
				}
			})
		},
	}
}

func buildCommand() *cli.Command {
	return &cli.Command{
		Name:      "build",
		Usage:     "make a train on a base image, as the central builder does",
		ArgsUsage: "FROM",
		Flags: append(imageFlags(), compressionFlag(),
			&cli.StringFlag{Name: "files", Usage: "directory of train files (the algorithm)"},
			&cli.StringFlag{Name: "query", Usage: "query file, added as query.json"},
			&cli.StringSliceFlag{Name: "route", Usage: "a station, in route order: `ID=PUBKEY` (PEM or hex-of-PEM file); repeat"},
			&cli.StringFlag{Name: "eco-system", Value: "tue", Usage: "eco_system of the route's stations (tue or padme)"},
			&cli.StringFlag{Name: "creator-id", Usage: "the creator's (researcher's) id"},
			&cli.StringFlag{Name: "user-key", Usage: "the creator's private key, to sign the train here"},
			&cli.StringFlag{Name: "user-key-password-file", Usage: "file holding the user key's password"},
			&cli.StringFlag{Name: "user-public", Usage: "the creator's public key, with --user-signature"},
			&cli.StringFlag{Name: "user-signature", Usage: "hex of a user signature made elsewhere (verified before use)"},
			&cli.StringFlag{Name: "builder-key", Usage: "the builder's private key"},
			&cli.StringFlag{Name: "builder-key-password-file", Usage: "file holding the builder key's password"},
			&cli.StringFlag{Name: "proposal-id", Value: "1"},
			&cli.StringFlag{Name: "train-id", Usage: "the train's @id (default: derived from the session id)"},
			&cli.StringFlag{Name: "source-address", Usage: "master image repository recorded in the config (default: FROM's repository)"},
			&cli.StringFlag{Name: "source-tag", Usage: "master image tag recorded in the config (default: FROM's tag)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "destination"}),
		Action: func(c *cli.Context) error {
			from, err := oneArg(c, "FROM image")
			if err != nil {
				return err
			}
			for _, f := range []string{"files", "creator-id", "builder-key", "output"} {
				if c.String(f) == "" {
					return usagef("--%s is required", f)
				}
			}
			bo := protocol.BuildOptions{CreatorID: c.String("creator-id"), ProposalID: c.String("proposal-id"), ID: c.String("train-id"),
				Source: protocol.Source{Type: "docker_repository", Address: c.String("source-address"), Tag: c.String("source-tag")}}
			if len(c.StringSlice("route")) == 0 {
				return usagef("--route ID=PUBKEY is required (once per station)")
			}
			for _, r := range c.StringSlice("route") {
				id, path, ok := strings.Cut(r, "=")
				if !ok || id == "" || path == "" {
					return usagef("--route %q: expected ID=PUBKEY", r)
				}
				pub, err := keys.LoadPublicKey(path)
				if err != nil {
					return err
				}
				bo.Route = append(bo.Route, protocol.RouteStation{ID: id, EcoSystem: c.String("eco-system"), PublicKey: pub})
			}
			switch {
			case c.String("user-key") != "":
				if bo.UserKey, err = loadKey(c, "user-key", ""); err != nil {
					return err
				}
				bo.CreatorPublic = &bo.UserKey.PublicKey
			case c.String("user-public") != "" && c.String("user-signature") != "":
				if bo.CreatorPublic, err = keys.LoadPublicKey(c.String("user-public")); err != nil {
					return err
				}
				if bo.UserSignature, err = hex.DecodeString(strings.TrimSpace(c.String("user-signature"))); err != nil {
					return usagef("--user-signature: not hex: %v", err)
				}
			default:
				return usagef("give --user-key, or --user-public with --user-signature")
			}
			if bo.BuilderKey, err = loadKey(c, "builder-key", ""); err != nil {
				return err
			}
			e, err := env(c)
			if err != nil {
				return err
			}
			r, err := train.BuildJob(c.Context, from, c.String("files"), c.String("query"), c.String("output"), bo, e)
			if err != nil {
				return err
			}
			return printJob(c, r)
		},
	}
}

func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "generate keys and print their config form or fingerprint",
		Subcommands: []*cli.Command{
			{
				Name:      "generate",
				Usage:     "write NAME.pem (private, mode 0600) and NAME.pub.pem",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{&cli.IntFlag{Name: "bits", Value: 2048, Usage: "2048, 3072 or 4096"}, &cli.BoolFlag{Name: "json"},
					&cli.StringFlag{Name: "password-file", Usage: "encrypt NAME.pem (PKCS#8, AES-256-CBC, PBKDF2-SHA256) with the password in `FILE` (its first line); read it back with --key-password-file FILE or PRIVATE_KEY_PASSWORD"}},
				Action: func(c *cli.Context) error {
					name, err := oneArg(c, "NAME")
					if err != nil {
						return err
					}
					pass, err := password(c, "password-file", "")
					if err != nil {
						return usageError{err}
					}
					if c.IsSet("password-file") && len(pass) == 0 {
						return usagef("--password-file %s: empty password", c.String("password-file"))
					}
					r, err := keys.GenerateFilesEncrypted(name, c.Int("bits"), pass)
					if err != nil {
						return err
					}
					return printResult(c, r, func(w io.Writer) {
						enc := ""
						if r.Encrypted {
							enc = ", encrypted"
						}
						textesc.Fprintf(w, "wrote %s (private, 0600%s) and %s\nfingerprint %s\n", r.PrivatePath, enc, r.PublicPath, r.Fingerprint)
					})
				},
			},
			{
				Name:      "public",
				Usage:     "print a key's public half in the train config form (hex of SPKI PEM)",
				ArgsUsage: "KEY",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "key-password-file"}, &cli.BoolFlag{Name: "json"}},
				Action: func(c *cli.Context) error {
					path, err := oneArg(c, "KEY")
					if err != nil {
						return err
					}
					pub, err := publicOf(c, path)
					if err != nil {
						return err
					}
					h, err := keys.EncodePublicKeyHex(pub)
					if err != nil {
						return err
					}
					return printResult(c, map[string]string{"rsa_public_key": h, "fingerprint": keys.Fingerprint(pub)}, func(w io.Writer) { textesc.Fprintln(w, h) })
				},
			},
			{
				Name:      "fingerprint",
				Usage:     "print SHA256:base64 of a key's SPKI DER (as ssh does); KEY is a file or a hex-of-PEM string",
				ArgsUsage: "KEY|HEXPEM",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "key-password-file"}, &cli.BoolFlag{Name: "json"}},
				Action: func(c *cli.Context) error {
					arg, err := oneArg(c, "KEY")
					if err != nil {
						return err
					}
					pub, err := publicOf(c, arg)
					if err != nil {
						return err
					}
					fp := keys.Fingerprint(pub)
					return printResult(c, map[string]string{"fingerprint": fp}, func(w io.Writer) { textesc.Fprintln(w, fp) })
				},
			},
		},
	}
}

// publicOf reads a public key from a file holding a public or private key,
// or from a hex-of-PEM string.
func publicOf(c *cli.Context, arg string) (*rsa.PublicKey, error) {
	if _, err := os.Stat(arg); err != nil {
		if pub, herr := keys.ParsePublicKeyHex(arg); herr == nil {
			return pub, nil
		}
		return nil, fmt.Errorf("%s: %w", arg, err)
	}
	if pub, err := keys.LoadPublicKey(arg); err == nil {
		return pub, nil
	}
	pass, err := password(c, "key-password-file", "PRIVATE_KEY_PASSWORD")
	if err != nil {
		return nil, err
	}
	k, err := keys.LoadPrivateKey(arg, pass)
	if err != nil {
		return nil, err
	}
	return &k.PublicKey, nil
}
