package oci

import (
	"bytes"
	"strings"
	"testing"
)

// TestBarFinishAtTotal: a bar whose total was an estimate below what was
// done ends with done = total and 100%, not "21.0 KiB / 14.9 KiB".
func TestBarFinishAtTotal(t *testing.T) {
	var buf bytes.Buffer
	b := newByteBar(&buf, 15287, "writing x.tar")
	b.Add64(21504)
	if err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	frames := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\r")
	last := frames[len(frames)-1]
	if !strings.Contains(last, "21.0 KiB / 21.0 KiB  100%") {
		t.Errorf("last frame %q, want 21.0 KiB / 21.0 KiB  100%%", last)
	}
	if !strings.HasSuffix(buf.String(), "\n") {
		t.Errorf("no newline after the last frame: %q", buf.String())
	}
}
