package layer

import (
	"bytes"
	"fmt"
	"os"
	"testing"
)

// TestResolveMemoryBudget: small files past the in-memory budget go to one
// shared spool file, not to memory and not to one temporary file each.
func TestResolveMemoryBudget(t *testing.T) {
	var ents []ent
	body := func(i int) string { return fmt.Sprintf("%06d", i) + string(bytes.Repeat([]byte{byte(i)}, 512<<10-6)) }
	n := int(memBudget/(512<<10)) + 8
	for i := 0; i < n; i++ {
		ents = append(ents, reg(fmt.Sprintf("opt/pht_results/f%03d.bin", i), body(i)))
	}
	tmp := t.TempDir()
	// The files are repeated bytes, far above the train layer ratio.
	res, err := Resolve(imageOf(t, tarLayer(t, ents...)), []string{"opt/pht_results"}, ResolveOptions{TempDir: tmp, Limits: Limits{MaxTrainRatio: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if got := len(res.Files()); got != n {
		t.Fatalf("%d files, want %d", got, n)
	}
	for i, f := range res.Files() {
		if string(readFile(t, f)) != body(i) {
			t.Fatalf("%s: content differs", f.Path)
		}
	}
	if res.memUsed > memBudget {
		t.Errorf("%d bytes in memory, budget %d", res.memUsed, memBudget)
	}
	dirs, _ := os.ReadDir(tmp)
	if len(dirs) != 1 {
		t.Fatalf("spool dirs %v", dirs)
	}
	spooled, _ := os.ReadDir(tmp + "/" + dirs[0].Name())
	if len(spooled) != 0 || res.pack == nil {
		t.Errorf("%d spool files named, pack open: %v; want one shared pack, unlinked while open", len(spooled), res.pack != nil)
	}
}
