# phtoci — daemonless PHT train protocol on OCI images.
GO      ?= go
BIN     ?= bin/phtoci
PKGS    ?= ./...
FUZZTIME ?= 30s

.PHONY: all build demo test test-deps bench fuzz lint cross image clean man release release-check test-release

# Release builds: the tag (without v) of the checked-out commit, else
# 0.0.0-<commit>; every time stamp is the last commit's time.
TAG      := $(shell git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null | sed 's/^v//')
VERSION  ?= $(or $(TAG),0.0.0-$(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown))
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
EPOCH    ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
DIST     ?= dist
# darwin/arm64 and darwin/amd64 build too (binary, archive, SBOM; no .deb, not
# in the image); not by default: each is another full compile.
PLATFORMS ?= linux/amd64,linux/arm64
RELEASE_BUILD = CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -buildvcs=false -ldflags '-s -w -buildid= -X main.version=$(VERSION) -X main.revision=$(REVISION)'

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-X main.version=$(VERSION) -X main.revision=$(REVISION)' -o $(BIN) ./cmd/phtoci

# The main job on the bundled sample train: build a train, run pre-run and
# post-run at three stations, then decrypt and verify as the researcher.
demo: build
	./scripts/demo.sh $(BIN)

test-deps:
	./scripts/test-deps.sh

test: test-deps test-release cross
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

bench: build
	./bench/run.sh

# Every fuzz target in the repository, each for FUZZTIME (go test fuzzes
# one target of one package at a time).
fuzz:
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do \
	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do \
	    echo "fuzz $$(dirname $$f) $$t"; \
	    $(GO) test "$$(dirname $$f)" -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME); \
	  done; \
	done

lint: cross
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }

# Every package builds for Windows and macOS too; one that cannot is marked
# unix-only on purpose, with a build tag and a comment saying why (today
# internal/testpg and bench/servebench).
cross:
	GOOS=windows $(GO) build $(PKGS)
	GOOS=darwin $(GO) build $(PKGS)

# A container image of phtoci itself: an index of linux/amd64 and linux/arm64
# images (static binary, /tmp, a non-root user, WORKDIR /work, OCI labels),
# built with go-containerregistry (no Docker), written as an OCI archive.
image:
	GOARCH=amd64 $(RELEASE_BUILD) -o bin/linux-amd64/phtoci ./cmd/phtoci
	GOARCH=arm64 $(RELEASE_BUILD) -o bin/linux-arm64/phtoci ./cmd/phtoci
	SOURCE_DATE_EPOCH=$(EPOCH) $(GO) run ./internal/mkimage -binary linux/amd64=bin/linux-amd64/phtoci -binary linux/arm64=bin/linux-arm64/phtoci \
	  -version $(VERSION) -revision $(REVISION) -o bin/phtoci.oci.tar

# The man page, made from the command tree.
man: build
	$(BIN) man > bin/phtoci.1

# Everything a station installs, in $(DIST)/: static linux/amd64 and arm64
# binaries and tar.gz archives, a CycloneDX SBOM per binary, a .deb per
# architecture, the container image and SHA256SUMS. Offline (Go module proxy
# cache) and reproducible; tools/release is its own module.
release:
	cd tools/release && $(GO) run . -root ../.. -o $(abspath $(DIST)) -version $(VERSION) -revision $(REVISION) -epoch $(EPOCH) -platforms $(PLATFORMS) \
	  $(if $(SIGN_KEY),-sign-key $(abspath $(SIGN_KEY))) $(if $(SIGN_PASSWORD_FILE),-sign-password-file $(abspath $(SIGN_PASSWORD_FILE)))

# Two whole releases of this commit from two copies of the tree, each with its
# own build cache, must be byte-identical (both architectures; make test
# checks linux/amd64 only).
release-check:
	cd tools/release && PHTOCI_RELEASE_PLATFORMS=linux/amd64,linux/arm64 $(GO) test -count=1 -timeout 60m -run 'TestRelease' -v .

# The release tool's own checks, run by make test: reproducible linux/amd64
# artifacts and an installable .deb.
test-release:
	cd tools/release && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m ./...

clean:
	rm -rf bin $(DIST)
