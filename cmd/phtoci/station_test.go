package main

import (
	"strings"
	"testing"
)

// TestUpperCaseRepository (issue 28): a registry reference with upper-case
// letters in its repository is a usage error that says repository names
// are lower-case and shows the lower-case form (host and tag as written),
// not "unknown image transport".
func TestUpperCaseRepository(t *testing.T) {
	for in, low := range map[string]string{
		"harbor.example/Station-Aachen/Train-42:Latest": "harbor.example/station-aachen/train-42:Latest",
		"localhost:5000/PHT/train:1":                    "localhost:5000/pht/train:1",
		"docker://Harbor.example/PHT/train":             "Harbor.example/pht/train",
		"MyTrain:v1":                                    "mytrain:v1",
	} {
		r := fails(t, exitUsage, nil, []string{"verify", in, "--quiet"}, "repository names are lower-case ("+low+" would be one)")
		if strings.Contains(r.stderr, "unknown image transport") {
			t.Errorf("%s: %s", in, r.stderr)
		}
	}
	// Output references too.
	w := newWorld(t, "s1")
	fails(t, exitUsage, nil, append([]string{"post-run", "../../testdata/sample/master.oci.tar", "--results", t.TempDir(), "-o", "harbor.example/PHT/train:1"}, w.stationArgs("s1")...),
		"repository names are lower-case (harbor.example/pht/train:1 would be one)")
}
