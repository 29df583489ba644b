# phtoci — daemonless PHT train protocol on OCI images.
GO      ?= go
BIN     ?= bin/phtoci
PKGS    ?= ./...
FUZZTIME ?= 30s

.PHONY: all build demo test test-deps bench fuzz lint image clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/phtoci

# The main job on the bundled sample train: build a train, run pre-run and
# post-run at three stations, then decrypt and verify as the researcher.
demo: build
	./scripts/demo.sh $(BIN)

test-deps:
	./scripts/test-deps.sh

test: test-deps
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

bench: build
	./bench/run.sh

fuzz:
	$(GO) test ./protocol -run '^$$' -fuzz FuzzParseConfig -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecrypt -fuzztime $(FUZZTIME)
	$(GO) test ./keys -run '^$$' -fuzz FuzzParsePublicKeyHex -fuzztime $(FUZZTIME)

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }

# A container image of phtoci itself: static binary on an empty base, built
# with go-containerregistry (no Docker), written as an OCI archive.
image: build
	$(GO) run ./internal/mkimage --binary $(BIN) -o bin/phtoci.oci.tar

clean:
	rm -rf bin
