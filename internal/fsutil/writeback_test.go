package fsutil

import (
	"testing"
	"time"
)

func TestSourceDateEpoch(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if tm, ok := SourceDateEpoch(); !ok || !tm.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("got %v %v", tm, ok)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "soon")
	if _, ok := SourceDateEpoch(); ok {
		t.Fatal("invalid value accepted")
	}
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if _, ok := SourceDateEpoch(); ok {
		t.Fatal("empty value accepted")
	}
}
