package webhook_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/webhook"
)

// ExampleNew is the README's snippet for embedding the webhook handler
// (between the markers; train's TestReadmeSnippets keeps them identical),
// served under /pht/ and asked for /pht/healthz.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "phtoci-example-")
	defer os.RemoveAll(dir)
	verdicts := filepath.Join(dir, "verdicts.db")
	mux := http.NewServeMux()

	// README begin
	store, err := webhook.OpenStore(verdicts)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	srv, err := webhook.New(webhook.Config{Secret: "Bearer …", Store: store, Registry: "harbor.example",
		ReadSecret: "Bearer …", Verifier: webhook.TrainVerifier{Env: train.Env{}}})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown(ctx)
	mux.Handle("/pht/", http.StripPrefix("/pht", srv))
	// README end

	ts := httptest.NewServer(mux)
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/pht/healthz")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.Status, " ", string(body))
	// Output: 200 OK ok
}
