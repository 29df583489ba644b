package train

import (
	"sort"
	"testing"
)

// walkLess sorts like the reference's archive walk (vectors'
// results_walk_order_case).
func TestWalkLess(t *testing.T) {
	got := []string{"z.txt", "a.txt", "sub/z.bin", "a-b.txt", "B.txt", "a/b.txt", "sub/a.bin", "a/A.txt"}
	want := []string{"B.txt", "a/A.txt", "a/b.txt", "a-b.txt", "a.txt", "sub/a.bin", "sub/z.bin", "z.txt"}
	sort.Slice(got, func(i, j int) bool { return walkLess(got[i], got[j]) })
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
}
