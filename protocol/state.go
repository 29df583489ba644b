package protocol

import (
	"errors"
	"fmt"
)

// StationState is where a station stands on a train's route.
type StationState struct {
	Index int    `json:"index"` // the station's position in the route ordered by index
	State string `json:"state"` // "signed", "next" or "waiting"
	// Message says it in words, e.g. "route[1] station-leipzig has not
	// signed yet; this station is route[2]".
	Message string `json:"message"`
}

// StationState reports where st stands on c's route (status from Verify):
// its key must match its route entry (ErrStationNotOnRoute,
// ErrWrongPrivateKey otherwise).
func (c *Config) StationState(st Station, status *Status) (*StationState, error) {
	pos, e, err := stationEntry(c, st)
	if err != nil {
		return nil, err
	}
	s := &StationState{Index: pos, State: "next", Message: fmt.Sprintf("%s is route[%d], the next station", st.ID, pos)}
	if err := turn(c, st, pos, e, status); err != nil {
		s.Message = err.Error()
		s.State = "waiting"
		if errors.Is(err, ErrAlreadySigned) {
			s.State = "signed"
		}
	}
	return s, nil
}

// alreadySigned is ErrAlreadySigned for st at pos.
func alreadySigned(st Station, pos int) error {
	return fmt.Errorf("%s signed this train at route[%d]; nothing to do%.0w", st.ID, pos, ErrAlreadySigned)
}

// turn says whether it is st's turn (position pos, entry e): it has not
// signed, and every station before it has (Verify made sure that signed
// entries are a prefix of the route).
func turn(cfg *Config, st Station, pos int, e RouteEntry, status *Status) error {
	if e.Signature != nil {
		return alreadySigned(st, pos)
	}
	if status.Next < 0 { // every entry signed; not reached, as e has not
		return alreadySigned(st, pos)
	}
	if status.Next != pos {
		r := cfg.sortedRoute()[status.Next]
		return fmt.Errorf("route[%d] %s has not signed yet; this station is route[%d]%.0w", status.Next, r.Station, pos, ErrNotYourTurn)
	}
	return nil
}
