package train

import (
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/protocol"
)

// Inspection describes a train image: its config, the route with each
// station's state, its layers and the base boundary. Layers gives each
// layer's Index, Digest, Size, MediaType and Role ("base" or "protocol");
// Route each route entry's Index, Station, EcoSystem, KeyFingerprint and
// State: "done" (signed), "current" (the next to run) or "pending".
type Inspection struct {
	MediaType     types.MediaType  `json:"mediaType"`
	Digest        string           `json:"digest"`
	State         string           `json:"state"`
	Base          int              `json:"baseLayers"`
	BaseFromLabel bool             `json:"baseFromLabel"`
	Layers        []layerSummary   `json:"layers"`
	Route         []stationState   `json:"route"`
	Creator       string           `json:"creator"`
	CreatorKey    string           `json:"creatorKeyFingerprint,omitempty"`
	BuilderKey    string           `json:"builderKeyFingerprint,omitempty"`
	Verified      bool             `json:"verified"`
	VerifyError   string           `json:"verifyError,omitempty"`
	TrainID       string           `json:"train_id"`
	Source        string           `json:"source,omitempty"`
	Config        *protocol.Config `json:"-"`
	// ConfigJSON is the train config as stored in the image, with its own
	// field names.
	ConfigJSON json.RawMessage   `json:"config"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// layerSummary is one layer of an inspected image.
type layerSummary struct {
	Index     int             `json:"index"`
	Digest    string          `json:"digest"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
	Role      string          `json:"role"` // "base" or "protocol"
}

// stationState is one route entry: "done" (signed), "current" (the next to
// run) or "pending".
type stationState struct {
	Index          int    `json:"index"`
	Station        string `json:"station"`
	EcoSystem      string `json:"ecoSystem"`
	State          string `json:"state"`
	KeyFingerprint string `json:"keyFingerprint,omitempty"`
}

// Inspect reads img's train paths and summarises them. It verifies the
// config keylessly and reports the outcome instead of failing.
func Inspect(img v1.Image, o Options) (*Inspection, error) {
	t, err := Open(img, o)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	in := &Inspection{Base: t.Base, BaseFromLabel: t.FromLabel, Config: t.Config, Labels: t.Labels, Creator: t.Config.Creator.ID,
		TrainID: t.Config.ID, ConfigJSON: json.RawMessage(t.ConfigRaw), Layers: []layerSummary{}, Route: []stationState{}}
	if a := t.Config.Source.Address; a != "" {
		in.Source = a
		if tag := t.Config.Source.Tag; tag != "" {
			in.Source += ":" + tag
		}
	}
	if in.MediaType, err = img.MediaType(); err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	in.Digest = d.String()
	in.State = stateEncrypted
	if t.Decrypted() {
		in.State = stateDecrypted
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for i, l := range layers {
		ls := layerSummary{Index: i, Role: "base"}
		if i >= t.Base {
			ls.Role = "protocol"
		}
		if h, err := l.Digest(); err == nil {
			ls.Digest = h.String()
		}
		if ls.Size, err = l.Size(); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if ls.MediaType, err = l.MediaType(); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		in.Layers = append(in.Layers, ls)
	}
	in.CreatorKey = fingerprint(t.Config.Creator.RSAPublicKey)
	in.BuilderKey = fingerprint(t.Config.Build.RSAPublicKey)
	current := false
	for _, r := range t.Config.SortedRoute() {
		s := stationState{Index: r.Index, Station: r.Station, EcoSystem: r.EcoSystem, KeyFingerprint: fingerprint(r.RSAPublicKey)}
		switch {
		case r.Signature != nil:
			s.State = "done"
		case !current:
			s.State, current = "current", true
		default:
			s.State = "pending"
		}
		in.Route = append(in.Route, s)
	}
	if _, err := protocol.Verify(t.Config); err != nil {
		in.VerifyError = err.Error()
	} else if err := protocol.CheckFileNames(t.Config, t.TrainFS()); err != nil {
		in.VerifyError = err.Error()
	} else {
		in.Verified = true
	}
	return in, nil
}

func fingerprint(hexPEM string) string {
	pub, err := keys.ParsePublicKeyHex(hexPEM)
	if err != nil {
		return ""
	}
	return keys.Fingerprint(pub)
}
