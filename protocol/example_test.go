package protocol_test

import (
	"crypto/rsa"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing/fstest"

	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/protocol"
)

// memFiles keeps what a step writes in memory: a Sink, and a Spool.
type memFiles map[string][]byte

func (m memFiles) WriteFile(name string, _ int64, r io.Reader) error {
	b, err := io.ReadAll(r)
	m[name] = b
	return err
}

func (m memFiles) FS(dir string) (fs.FS, error) {
	f := fstest.MapFS{}
	for n, b := range m {
		if rest, ok := strings.CutPrefix(n, dir+"/"); ok {
			f[rest] = &fstest.MapFile{Data: b}
		}
	}
	return f, nil
}

func (m memFiles) Close() error { return nil }

// A station's post-run as a session: the new results are encrypted while
// the train is checked in another goroutine (for an image, while it is
// still being read); Finish signs once both are done.
func ExamplePostRun() {
	gen := func() *rsa.PrivateKey { k, err := keys.Generate(2048); must(err); return k }
	user, builder, st1, st2 := gen(), gen(), gen(), gen()
	built := memFiles{}
	cfg, err := protocol.Build(protocol.BuildOptions{
		CreatorID: "researcher-1", UserKey: user, BuilderKey: builder,
		Route: []protocol.RouteStation{{ID: "st-1", PublicKey: &st1.PublicKey}, {ID: "st-2", PublicKey: &st2.PublicKey}},
	}, fstest.MapFS{"entrypoint.py": {Data: []byte("print('hello')\n")}, "query.json": {Data: []byte("{}")}}, built)
	must(err)
	train, _ := built.FS("pht_train")

	s := protocol.NewPostRun(protocol.Station{ID: "st-1", Key: st1})
	defer s.Close()
	checked := make(chan error, 1)
	go func() {
		_, err := s.CheckTrain(cfg, train, fstest.MapFS{}, memFiles{}) // first station: no previous results
		checked <- err
	}()
	out := memFiles{}
	must(s.EncryptResults(fstest.MapFS{"count.txt": {Data: []byte("42\n")}}, out))
	must(<-checked)
	res, err := s.Finish()
	must(err)

	status, err := protocol.Verify(res.Config)
	must(err)
	fmt.Println("signed:", status.Done, "next:", res.Config.SortedRoute()[status.Next].Station)
	fmt.Println("files:", len(out))
	// Output:
	// signed: [0] next: st-2
	// files: 3
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
