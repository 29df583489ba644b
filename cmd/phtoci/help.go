package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// examples are the invocations each command's help ends with (and the man
// page shows), keyed by the command's full name.
var examples = map[string][]string{
	"pre-run": {
		"export STATION_ID=station-aachen PRIVATE_KEY_PATH=/etc/phtoci/station-aachen.pem",
		"phtoci pre-run registry.example/pht/train:1 -o oci-archive:train-1-decrypted.tar",
		"phtoci pre-run oci-archive:train.tar --station station-aachen --key station-aachen.pem",
	},
	"post-run": {
		"phtoci post-run registry.example/pht/train:1 --results ./results",
		"phtoci post-run oci-archive:train.tar --results ./results -o oci-archive:train-signed.tar",
	},
	"verify": {
		"phtoci verify registry.example/pht/train:1",
		"phtoci verify oci-archive:train.tar --station station-aachen --key station-aachen.pem --json",
	},
	"decrypt": {
		"phtoci decrypt oci-archive:train-3.tar --key researcher.pem --out final",
		"phtoci decrypt registry.example/pht/train:1 --key researcher.pem --out final --train",
	},
	"inspect": {
		"phtoci inspect oci-archive:train.tar",
		"phtoci inspect registry.example/pht/train:1 --json",
	},
	"build": {
		"phtoci build oci-archive:master.tar --files ./train --query query.json --creator-id researcher-1 \\\n" +
			"    --user-key researcher.pem --builder-key builder.pem --route station-aachen=station-aachen.pub.pem \\\n" +
			"    -o oci-archive:train.tar",
	},
	"keys": {
		"phtoci keys generate station-aachen",
		"phtoci keys fingerprint station-aachen.pub.pem",
	},
	"keys generate": {
		"phtoci keys generate station-aachen          # station-aachen.pem (0600), station-aachen.pub.pem",
		"phtoci keys generate researcher --bits 4096",
		"phtoci keys generate station-aachen --password-file pass.txt   # encrypted PKCS#8; pre-run reads it with --key-password-file pass.txt",
	},
	"keys public": {
		"phtoci keys public station-aachen.pem        # hex of the public key's PEM, as in train_config.json",
	},
	"keys fingerprint": {
		"phtoci keys fingerprint station-aachen.pub.pem",
		"phtoci keys fingerprint --json station-aachen.pem",
	},
	"check-base": {
		"phtoci check-base registry.example/pht/train:1",
		"phtoci check-base oci-archive:train.tar oci-archive:master.tar",
	},
	"ledger": {
		"phtoci ledger list",
		"phtoci ledger forget 1f2e3d4c-train-id --yes",
	},
	"ledger list": {
		"phtoci ledger list",
		"phtoci ledger list --ledger /var/lib/phtoci/ledger.jsonl --json",
	},
	"ledger forget": {
		"phtoci ledger forget 1f2e3d4c-train-id --yes   # by the train's @id",
		"phtoci ledger forget SESSION_ID_HEX --yes      # by its session id",
	},
	"serve": {
		"phtoci serve --config /etc/phtoci/serve.yaml",
	},
	"version": {
		"phtoci version",
		"phtoci --version",
		"phtoci version --json",
	},
	"completion": {
		"phtoci completion bash > /etc/bash_completion.d/phtoci",
		"phtoci completion zsh > \"${fpath[1]}/_phtoci\"",
		"phtoci completion fish > ~/.config/fish/completions/phtoci.fish",
	},
}

// addExamples ends the usage text of c (and of its subcommands) with its
// examples, unless the command sets a usage text of its own. The usage text
// is what urfave/cli's man page shows for a command, so the examples appear
// in phtoci(1) too.
func addExamples(c *cli.Command) {
	addExamplesNamed(c, c.Name)
}

func addExamplesNamed(c *cli.Command, name string) {
	if ex := examples[name]; len(ex) > 0 && c.UsageText == "" {
		u := "phtoci " + name
		if len(c.Subcommands) > 0 {
			u += " command"
		}
		u += " [command options]"
		if c.ArgsUsage != "" {
			u += " " + c.ArgsUsage
		}
		c.UsageText = u + "\n\nExamples:\n  " + strings.Join(ex, "\n  ")
	}
	for _, s := range c.Subcommands {
		addExamplesNamed(s, name+" "+s.Name)
	}
}
