package protocol

import (
	"bytes"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

// postRunUpdate is a whole post-run on plaintext train files, the session's
// steps in the order the plain post-run calls them.
func postRunUpdate(cfg *Config, trainPlain, resultsPlain fs.FS, st Station, out Sink) (*PostRunResult, error) {
	s := NewPostRun(st)
	defer s.Close()
	if err := s.CheckPlainTrain(cfg, trainPlain); err != nil {
		return nil, err
	}
	if err := s.EncryptResults(resultsPlain, out); err != nil {
		return nil, err
	}
	return s.Finish()
}

// memSpool is a memSink that gives back what it holds (a Spool).
type memSpool struct{ memSink }

func (m memSpool) FS(dir string) (fs.FS, error) { return m.asFS(dir), nil }
func (m memSpool) Close() error                 { return nil }

// TestPostRunResultsFirst: the new results encrypted before the config is
// known, then the plaintext train checked and Finish, give a train the next
// station's pre-run accepts, with the results as given; a station not on
// the route fails the check, and Finish then signs nothing.
func TestPostRunResultsFirst(t *testing.T) {
	cfg, files := buildTrain(t, "st-1", "st-2")
	plain := memSink{}
	if err := PreRunCheck(cfg, files.asFS("pht_train"), fstest.MapFS{}, st(t, "st-1"), plain); err != nil {
		t.Fatal(err)
	}
	newResults := fstest.MapFS{
		"count.txt": {Data: []byte("st-1: 42\n")},
		"big.bin":   {Data: bytes.Repeat([]byte{3}, 1<<20+5)},
	}
	out := memSink{}
	s := NewPostRun(st(t, "st-1"))
	defer s.Close()
	if err := s.EncryptResults(newResults, out); err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("EncryptResults wrote %d files, want the 2 results", len(out))
	}
	if err := s.CheckPlainTrain(cfg, plain.asFS("pht_train")); err != nil {
		t.Fatal(err)
	}
	res, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	next, err := ParseConfig(res.ConfigJSON)
	if err != nil {
		t.Fatal(err)
	}
	got := memSink{}
	if err := PreRunCheck(next, out.asFS("pht_train"), out.asFS("pht_results"), st(t, "st-2"), got); err != nil {
		t.Fatalf("next station's pre-run: %v", err)
	}
	for n, f := range newResults {
		if !bytes.Equal(got["pht_results/"+n], f.Data) {
			t.Errorf("%s differs after the next pre-run", n)
		}
	}

	s9 := NewPostRun(st(t, "st-9"))
	defer s9.Close()
	if err := s9.EncryptResults(newResults, memSink{}); err != nil {
		t.Fatal(err)
	}
	if err := s9.CheckPlainTrain(cfg, plain.asFS("pht_train")); !errors.Is(err, ErrStationNotOnRoute) {
		t.Errorf("CheckPlainTrain for a station not on the route: %v", err)
	}
	if res, err := s9.Finish(); res != nil || !errors.Is(err, ErrPostRunOrder) {
		t.Errorf("Finish after a failed check: %v, %v; want no config and ErrPostRunOrder", res, err)
	}
}

// secondHop is a train after st-1's post-run, for st-2: encrypted train
// files and results.
func secondHop(t *testing.T) (*Config, memSink) {
	t.Helper()
	cfg, files := buildTrain(t, "st-1", "st-2", "st-3")
	return runStation(t, cfg, files.asFS("pht_train"), fstest.MapFS{}, "st-1", fstest.MapFS{"r1.txt": {Data: []byte("st-1 was here")}})
}

// TestPostRunEncryptedTrain: the encrypted train is checked (and its
// previous results with it, alongside) while the new results are encrypted
// in another goroutine; the next station's pre-run accepts the output.
// With the previous results changed, Finish returns the check's error and
// signs nothing, and the train files are not written.
func TestPostRunEncryptedTrain(t *testing.T) {
	cfg, hop := secondHop(t)
	newResults := fstest.MapFS{"r2.bin": {Data: bytes.Repeat([]byte{7}, 300<<10)}}
	run := func(results fs.FS) (memSink, *PostRunResult, error) {
		out := memSink{}
		s := NewPostRun(st(t, "st-2"))
		defer s.Close()
		encrypted := make(chan error, 1)
		go func() { encrypted <- s.EncryptResults(newResults, out) }()
		spool := memSpool{memSink{}}
		trainPlain, err := s.CheckTrain(cfg, hop.asFS("pht_train"), results, spool)
		if err != nil {
			t.Fatal(err)
		}
		if err := fs.WalkDir(trainPlain, ".", func(string, fs.DirEntry, error) error { return nil }); err != nil || len(spool.memSink) == 0 {
			t.Fatalf("CheckTrain's plaintext train files: %v, %d in the spool", err, len(spool.memSink))
		}
		if err := <-encrypted; err != nil {
			t.Fatal(err)
		}
		res, err := s.Finish()
		return out, res, err
	}
	out, res, err := run(hop.asFS("pht_results"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := ParseConfig(res.ConfigJSON)
	if err != nil {
		t.Fatal(err)
	}
	got := memSink{}
	if err := PreRunCheck(next, out.asFS("pht_train"), out.asFS("pht_results"), st(t, "st-3"), got); err != nil {
		t.Fatalf("st-3's pre-run: %v", err)
	}
	if !bytes.Equal(got["pht_results/r2.bin"], newResults["r2.bin"].Data) {
		t.Error("st-2's results differ at st-3")
	}

	changed := hop.asFS("pht_results").(fstest.MapFS)
	c := changed["r1.txt"]
	c.Data = append([]byte{}, c.Data...)
	c.Data[len(c.Data)-1] ^= 1
	out, res, err = run(changed)
	if res != nil || !errors.Is(err, ErrPreviousResultsChanged) {
		t.Fatalf("changed previous results: %v, %v; want no config and ErrPreviousResultsChanged", res, err)
	}
	for n := range out {
		if strings.HasPrefix(n, "pht_train/") {
			t.Errorf("%s written although the previous results do not verify", n)
		}
	}
}

// TestPostRunOrder: every step called out of order returns ErrPostRunOrder
// (never a panic), and no config is signed.
func TestPostRunOrder(t *testing.T) {
	cfg, files := buildTrain(t, "st-1", "st-2")
	plain := memSink{}
	if err := PreRunCheck(cfg, files.asFS("pht_train"), fstest.MapFS{}, st(t, "st-1"), plain); err != nil {
		t.Fatal(err)
	}
	results := fstest.MapFS{"r": {Data: []byte("r")}}
	train := plain.asFS("pht_train")
	type step func(*PostRun) error
	enc := func(s *PostRun) error { return s.EncryptResults(results, memSink{}) }
	check := func(s *PostRun) error { return s.CheckPlainTrain(cfg, train) }
	checkEnc := func(s *PostRun) error {
		_, err := s.CheckTrain(cfg, files.asFS("pht_train"), fstest.MapFS{}, memSpool{memSink{}})
		return err
	}
	finished := func(s *PostRun) error { _, err := s.Finish(); return err }
	finish := func(s *PostRun) error {
		res, err := s.Finish()
		if res != nil {
			t.Error("a config was signed")
		}
		return err
	}
	closed := func(s *PostRun) error { s.Close(); return nil }
	for _, c := range []struct {
		name   string
		before []step
		last   step
	}{
		{"Finish first", nil, finish},
		{"Finish without a check", []step{enc}, finish},
		{"Finish without results", []step{check}, finish},
		{"results twice", []step{enc}, enc},
		{"check twice", []step{check}, check},
		{"plain then encrypted check", []step{check}, checkEnc},
		{"results after Close", []step{closed}, enc},
		{"check after Close", []step{closed}, check},
		{"Finish after Close", []step{enc, check, closed}, finish},
		{"results after Finish", []step{enc, check, finished}, enc},
		{"Finish twice", []step{enc, check, finished}, finish},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewPostRun(st(t, "st-1"))
			defer s.Close()
			for _, b := range c.before {
				if err := b(s); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.last(s); !errors.Is(err, ErrPostRunOrder) {
				t.Fatalf("got %v, want ErrPostRunOrder", err)
			}
		})
	}
}
