package oci

import (
	"net/url"
	"testing"
)

// TestBlobName: a blob's URL becomes REPO@DIGEST; an upload without its
// digest yet names the repository alone; the session state never shows.
func TestBlobName(t *testing.T) {
	d := "sha256:" + "ab12"
	for raw, want := range map[string]string{
		"http://r/v2/pht/train/blobs/" + d:                               "pht/train@" + d,
		"https://r/v2/a/b/c/blobs/uploads/uuid-1?_state=SECRET":          "a/b/c",
		"https://r/v2/pht/train/blobs/uploads/uuid?_state=S&digest=" + d: "pht/train@" + d,
		"https://r/v2/pht/train/manifests/latest":                        "pht/train/manifests/latest",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := blobRef(u); got != want {
			t.Errorf("blobName(%s) = %q, want %q", raw, got, want)
		}
	}
}
