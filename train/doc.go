// Package train runs the PHT protocol's image-level steps on v1.Image values:
// it finds a train's files with layer.Resolve, calls the pure protocol
// functions, and assembles the output as base layers plus one new protocol
// layer (DESIGN's always-rebase). It knows nothing about where images come
// from: package oci opens and writes them, and jobs.go wires both for the CLI
// and for embedding (one call per command).
package train
