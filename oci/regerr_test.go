package oci

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// TestWithoutURLs: registry request URLs in an error become what the
// request transfers; the upload session and its _state token are gone and
// the error still matches what it wrapped.
func TestWithoutURLs(t *testing.T) {
	for raw, want := range map[string]string{
		"https://reg.example/v2/pht/train/blobs/uploads/9f1c?_state=SECRET":                  "blob upload to pht/train",
		"https://reg.example/v2/pht/train/blobs/uploads/9f1c?_state=SECRET&digest=sha256:ab": "upload of blob sha256:ab of pht/train",
		"https://reg.example/v2/pht/train/blobs/sha256:cd":                                   "blob sha256:cd of pht/train",
		"https://reg.example/v2/pht/train/manifests/latest":                                  "manifest pht/train:latest",
		"https://reg.example/v2/":                                                            "registry API check",
	} {
		ue := &url.Error{Op: "Patch", URL: raw, Err: context.Canceled}
		err := WithoutURLs(fmt.Errorf("pushing a layer to reg.example/pht/train: %w", ue))
		if got := err.Error(); got != "pushing a layer to reg.example/pht/train: "+want+": context canceled" {
			t.Errorf("%s: %q", raw, got)
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "9f1c") || !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", raw, err)
		}
	}
	other := &url.Error{Op: "Get", URL: "https://auth.example/token?scope=x", Err: context.Canceled}
	if err := WithoutURLs(other); err != other {
		t.Errorf("a URL outside the registry API changed: %v", err)
	}
}
