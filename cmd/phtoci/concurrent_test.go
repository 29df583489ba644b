package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/train"
)

// TestConcurrentPostRunsToOneTag: 20 rounds of two post-runs of one
// train started together, both writing back to the tag they read. A run
// may lose (exit 3, a lost update reported), but a run that exits 0 has
// its push under the tag at the end: never two successes with one result
// lost.
func TestConcurrentPostRunsToOneTag(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{})
	w := newWorld(t, "st-a")
	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	img := openRef(t, built, oci.Options{})
	res := w.results(t, "st-a")
	lost := 0
	for round := 0; round < 20; round++ {
		tag := fmt.Sprintf("%s/pht/race:r%d", reg.Host, round)
		writeRef(t, img, tag, oci.Options{})
		type run struct {
			code   int
			digest string
			stderr string
		}
		runs := make([]run, 2)
		var wg sync.WaitGroup
		for i := range runs {
			home := t.TempDir() // a station ledger of its own: each run is the first of this train
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(phtociBin, append([]string{"post-run", tag, "--results", res, "-o", tag, "--json"}, w.stationArgs("st-a")...)...)
				cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + os.TempDir()}
				var so, se bytes.Buffer
				cmd.Stdout, cmd.Stderr = &so, &se
				err := cmd.Run()
				r := run{stderr: se.String()}
				if ee, ok := err.(*exec.ExitError); ok {
					r.code = ee.ExitCode()
				} else if err != nil {
					r.code = -1
				}
				var jr train.JobResult
				if json.Unmarshal(so.Bytes(), &jr) == nil {
					r.digest = jr.Digest
				}
				runs[i] = r
			}()
		}
		wg.Wait()
		final := headDigest(t, tag)
		for i, r := range runs {
			switch {
			case r.code == 0 && r.digest != final:
				t.Errorf("round %d run %d: exit 0 with %s pushed, but the tag holds %s: a lost update not reported", round, i, r.digest, final)
			case r.code == exitIO:
				lost++
			case r.code != 0:
				t.Errorf("round %d run %d: exit %d: %s", round, i, r.code, r.stderr)
			}
		}
	}
	t.Logf("20 rounds: %d lost updates reported (exit 3)", lost)
}
