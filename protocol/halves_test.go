package protocol

import (
	"bytes"
	"errors"
	"testing"
	"testing/fstest"
)

// TestPostRunInTwoHalves: the new results encrypted before the config is
// known (EncryptNewResults), then FinishPostRun, give a train the next
// station's pre-run accepts, with the results as given; FinishPostRun's
// checks still refuse a station not on the route.
func TestPostRunInTwoHalves(t *testing.T) {
	cfg, files := buildTrain(t, "st-1", "st-2")
	plain := memSink{}
	if _, err := PreRunCheck(cfg, files.asFS("pht_train"), fstest.MapFS{}, st(t, "st-1"), plain); err != nil {
		t.Fatal(err)
	}
	newResults := fstest.MapFS{
		"count.txt": {Data: []byte("st-1: 42\n")},
		"big.bin":   {Data: bytes.Repeat([]byte{3}, 1<<20+5)},
	}
	out := memSink{}
	nr, err := EncryptNewResults(newResults, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("EncryptNewResults wrote %d files, want the 2 results", len(out))
	}
	res, err := FinishPostRun(cfg, plain.asFS("pht_train"), st(t, "st-1"), nr, out)
	if err != nil {
		t.Fatal(err)
	}
	next, err := ParseConfig(res.ConfigJSON)
	if err != nil {
		t.Fatal(err)
	}
	got := memSink{}
	if _, err := PreRunCheck(next, out.asFS("pht_train"), out.asFS("pht_results"), st(t, "st-2"), got); err != nil {
		t.Fatalf("next station's pre-run: %v", err)
	}
	for n, f := range newResults {
		if !bytes.Equal(got["pht_results/"+n], f.Data) {
			t.Errorf("%s differs after the next pre-run", n)
		}
	}

	nr, err = EncryptNewResults(newResults, memSink{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FinishPostRun(cfg, plain.asFS("pht_train"), st(t, "st-9"), nr, memSink{}); !errors.Is(err, ErrStationNotOnRoute) {
		t.Errorf("FinishPostRun for a station not on the route: %v", err)
	}
}
