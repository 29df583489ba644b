package train_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
)

// ExamplePostRunJob is the README's "Embedding" snippet (between the
// markers, TestReadmeSnippets keeps them identical) run on the reference
// train built for station_1 and its results.
func ExamplePostRunJob() {
	ctx := context.Background()
	out, _ := os.MkdirTemp("", "phtoci-example-")
	defer os.RemoveAll(out)
	keyFile, stationID := "../testdata/vectors/keys/station_1.pem", "station_1"
	image, results := "oci-archive:../testdata/vectors/images/train_initial.oci.tar", "../testdata/vectors/images/results_station_1"
	output := "oci-archive:" + filepath.Join(out, "train.oci.tar")

	// README begin
	key, err := keys.LoadPrivateKey(keyFile, nil)
	if err != nil {
		log.Fatal(err)
	}
	st := protocol.Station{ID: stationID, Key: key}
	res, err := train.PostRunJob(ctx, image, results, output, st, train.Env{})
	if c := train.Classify(err); c.Kind == train.KindVerification {
		fmt.Println("rejected, check", c.Check) // do not run this train
		return
	} else if err != nil {
		log.Fatal(err) // KindUsage: fix the call; KindIO: retry
	}
	fmt.Println(res.Station, "signed; next route index:", res.Next)
	// README end

	// Output: station_1 signed; next route index: 1
}

// ExampleClassify: what an error means to the caller.
func ExampleClassify() {
	err := fmt.Errorf("pre-run: %w", protocol.ErrUserSignature)
	c := train.Classify(err)
	fmt.Println(c.Kind, c.Check)
	// Output: verification user_signature
}

// TestReadmeSnippets: the README's embedding snippets are the code the
// examples run (between "// README begin" and "// README end").
func TestReadmeSnippets(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"example_test.go", "../webhook/example_test.go"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, ok1 := strings.Cut(string(src), "\t// README begin\n")
		snippet, _, ok2 := strings.Cut(rest, "\t// README end\n")
		if !ok1 || !ok2 {
			t.Fatalf("%s: no README markers", f)
		}
		snippet = strings.ReplaceAll("\n"+snippet, "\n\t", "\n")[1:]
		if !strings.Contains(string(readme), "```go\n"+snippet+"```\n") {
			t.Errorf("README.md does not hold %s's snippet as a go block:\n%s", f, snippet)
		}
	}
}
