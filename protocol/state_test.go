package protocol

import (
	"errors"
	"testing"
	"testing/fstest"
)

// TestStationStates: a station that signed already, one whose turn has not
// come and one not on the route each get their own message and sentinel,
// none of the tampering ones; Config.StationState reports the same states.
func TestStationStates(t *testing.T) {
	cfg, files := buildTrain(t, "st-1", "st-2", "st-3")
	cfg1, out1 := runStation(t, cfg, files.asFS("pht_train"), fstest.MapFS{}, "st-1", fstest.MapFS{"r.txt": {Data: []byte("one")}})
	train1, res1 := out1.asFS("pht_train"), out1.asFS("pht_results")
	status, err := Verify(cfg1)
	if err != nil {
		t.Fatal(err)
	}
	tampering := []error{ErrChainSignature, ErrPreviousResultsChanged, ErrDecryption, ErrIntegrity, ErrImmutableChanged}
	cases := []struct {
		station, state, msg string
		want                error
	}{
		{"st-1", "signed", "st-1 signed this train at route[0]; nothing to do", ErrAlreadySigned},
		{"st-3", "waiting", "route[1] st-2 has not signed yet; this station is route[2]", ErrNotYourTurn},
		{"st-2", "next", "st-2 is route[1], the next station", nil},
	}
	for _, c := range cases {
		t.Run(c.station, func(t *testing.T) {
			s, err := cfg1.StationState(st(t, c.station), status)
			if err != nil || s.State != c.state || s.Message != c.msg {
				t.Fatalf("StationState: %+v, %v; want %s %q", s, err, c.state, c.msg)
			}
			err = PreRunCheck(cfg1, train1, res1, st(t, c.station), memSink{})
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.want) || err.Error() != c.msg {
				t.Fatalf("pre-run: %v, want %q (%v)", err, c.msg, c.want)
			}
			for _, bad := range tampering {
				if errors.Is(err, bad) {
					t.Errorf("route state reported as tampering (%v)", bad)
				}
			}
		})
	}
	if _, err := cfg1.StationState(Station{ID: "st-9", Key: genKey(t, "st-2")}, status); !errors.Is(err, ErrStationNotOnRoute) {
		t.Errorf("not on route: %v", err)
	}
	if _, err := cfg1.StationState(Station{ID: "st-2", Key: genKey(t, "st-1")}, status); !errors.Is(err, ErrWrongPrivateKey) {
		t.Errorf("wrong key: %v", err)
	}
}
