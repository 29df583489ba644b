// Package webhook is the piece a registry calls when a train is pushed: an
// http.Handler that accepts Harbor PUSH_ARTIFACT events and CNCF
// distribution notification envelopes, queues each pushed artifact by
// repository and digest, verifies exactly that digest without any station
// key, and records the verdict in an embedded store (bbolt) that survives
// restarts. It embeds in any Go service; `phtoci serve` wires it.
package webhook

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Artifact is one pushed image, identified by digest.
type Artifact struct {
	Registry   string `json:"registry"`   // host[:port]
	Repository string `json:"repository"` // path without host
	Digest     string `json:"digest"`
	Tag        string `json:"tag,omitempty"`
	Pusher     string `json:"pusher,omitempty"`
	// Time is the registry's time of the push (the event's timestamp);
	// the newest push of a tag decides what the tag names.
	Time time.Time `json:"time,omitempty"`
}

// Key is the artifact's identity in the queue and the store.
func (a Artifact) Key() string { return a.Repository + "@" + a.Digest }

// Ref is the reference phtoci verifies: host/repository@digest.
func (a Artifact) Ref() string { return a.Registry + "/" + a.Repository + "@" + a.Digest }

// mediaTypeDistribution is the distribution registry's envelope type.
const mediaTypeDistribution = "application/vnd.docker.distribution.events.v1+json"

type distributionEnvelope struct {
	Events []struct {
		Action    string    `json:"action"`
		Timestamp time.Time `json:"timestamp"`
		Target    struct {
			MediaType  string `json:"mediaType"`
			Digest     string `json:"digest"`
			Repository string `json:"repository"`
			URL        string `json:"url"`
			Tag        string `json:"tag"`
		} `json:"target"`
		Request struct {
			Host string `json:"host"`
		} `json:"request"`
		Actor struct {
			Name string `json:"name"`
		} `json:"actor"`
	} `json:"events"`
}

type harborEvent struct {
	Type     string `json:"type"`
	OccurAt  int64  `json:"occur_at"`
	Operator string `json:"operator"`
	Data     *struct {
		Resources []struct {
			Digest      string `json:"digest"`
			Tag         string `json:"tag"`
			ResourceURL string `json:"resource_url"`
		} `json:"resources"`
		Repository struct {
			Namespace    string `json:"namespace"`
			Name         string `json:"name"`
			RepoFullName string `json:"repo_full_name"`
		} `json:"repository"`
	} `json:"event_data"`
}

// parse turns a request body into the artifacts to verify; ignored says
// why nothing is to be done (other event kinds), err that the body is bad.
func parse(body []byte, contentType string) (arts []Artifact, ignored string, err error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, "", fmt.Errorf("body is not a JSON object: %w", err)
	}
	_, isDist := probe["events"]
	if _, isHarbor := probe["type"]; !isDist && !isHarbor && strings.HasPrefix(contentType, mediaTypeDistribution) {
		return nil, "", fmt.Errorf("events: missing from a %s body", mediaTypeDistribution)
	}
	if isDist {
		var env distributionEnvelope
		if err := json.Unmarshal(body, &env); err != nil {
			return nil, "", fmt.Errorf("distribution envelope: %w", err)
		}
		for i, e := range env.Events {
			if e.Action != "push" {
				continue
			}
			if !isManifest(e.Target.MediaType) || e.Target.Digest == "" {
				continue // blob pushes and layers
			}
			if e.Target.Repository == "" {
				return nil, "", fmt.Errorf("events[%d].target.repository: missing", i)
			}
			arts = append(arts, Artifact{Registry: e.Request.Host, Repository: e.Target.Repository, Digest: e.Target.Digest, Tag: e.Target.Tag, Pusher: e.Actor.Name, Time: e.Timestamp.UTC()})
		}
		if len(arts) == 0 {
			return nil, "no manifest push events", nil
		}
		return arts, "", nil
	}
	if _, ok := probe["type"]; ok {
		var h harborEvent
		if err := json.Unmarshal(body, &h); err != nil {
			return nil, "", fmt.Errorf("harbor event: %w", err)
		}
		if h.Type != "PUSH_ARTIFACT" {
			return nil, fmt.Sprintf("event type %q is not PUSH_ARTIFACT", h.Type), nil
		}
		if h.Data == nil {
			return nil, "", fmt.Errorf("event_data: missing")
		}
		for i, r := range h.Data.Resources {
			if r.Digest == "" {
				return nil, "", fmt.Errorf("event_data.resources[%d].digest: missing", i)
			}
			// resource_url is host/namespace/name:tag (or @digest).
			host := r.ResourceURL
			if j := strings.IndexByte(host, '/'); j >= 0 {
				host = host[:j]
			}
			repo := h.Data.Repository.RepoFullName
			if repo == "" {
				return nil, "", fmt.Errorf("event_data.repository.repo_full_name: missing")
			}
			arts = append(arts, Artifact{Registry: host, Repository: repo, Digest: r.Digest, Tag: r.Tag, Pusher: h.Operator, Time: harborTime(h.OccurAt)})
		}
		if len(arts) == 0 {
			return nil, "no resources", nil
		}
		return arts, "", nil
	}
	return nil, "", fmt.Errorf("neither a distribution envelope (events) nor a Harbor event (type)")
}

// isManifest says whether a pushed target is a manifest, image index
// included (an OCI index's media type does not say "manifest").
func isManifest(mediaType string) bool {
	return strings.Contains(mediaType, "manifest") || strings.HasPrefix(mediaType, "application/vnd.oci.image.index.")
}

func harborTime(sec int64) time.Time {
	if sec <= 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}
