// Package testutil holds the helpers phtoci's tests share: failing a test
// on an error, and measuring the heap a piece of work needs.
package testutil

import (
	"testing"
)

// Must fails t at once when err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Must1 returns v, failing t at once when err is not nil. It takes a
// call's two results directly: x := testutil.Must1(f())(t).
func Must1[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
