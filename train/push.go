package train

import (
	"context"
	"errors"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// errPushEnded tells the producer that the push stopped reading.
var errPushEnded = errors.New("push ended")

// push produces p's layer into a streaming layer while oci.Write uploads
// it: no temporary file, and the upload overlaps with hashing and
// encryption. The layer is gzip (go-containerregistry's stream.Layer;
// stored blocks unless o.Compression is CompressionFast), or a plain tar
// with CompressionNone (layer.PlainStream). When producing fails (a check,
// the deferred layer check), the upload fails with it and no manifest is
// pushed: nothing is written.
func (p *plan) push(ctx context.Context, dst oci.Ref, oo oci.Options, o Options) (v1.Hash, *protocol.Config, error) {
	plain := o.Compression == CompressionNone
	lmt := newLayerType(plain)
	pr, pw := io.Pipe()
	var sl v1.Layer
	if plain {
		sl = layer.NewPlainStream(pr, lmt)
	} else {
		sl = stream.NewLayer(pr, stream.WithCompressionLevel(o.Compression.gzipLevel()), stream.WithMediaType(lmt))
	}
	sl = oci.ChunkedUpload(sl)
	if p.overlap != nil {
		return p.pushLayerFirst(ctx, dst, oo, o, pr, pw, sl)
	}
	img, err := p.rebase(sl)
	if err != nil {
		pr.Close()
		return v1.Hash{}, nil, err
	}
	type produced struct {
		cfg *protocol.Config
		err error
	}
	done := make(chan produced, 1)
	go func() {
		cfg, err := p.produceInto(pw, o)
		done <- produced{cfg, err}
	}()
	d, werr := oci.Write(ctx, dst, img, oo)
	pr.CloseWithError(errPushEnded) // unblocks the producer if the push stopped early
	pd := <-done
	if err := pushError(pd.err, werr); err != nil {
		return v1.Hash{}, nil, err
	}
	return d, pd.cfg, nil
}

// produceInto produces p's layer as a tar stream into pw and closes pw:
// with nil when the layer is complete, else with the error (after the
// deferred layer check, which explains a failure better).
func (p *plan) produceInto(pw *io.PipeWriter, o Options) (*protocol.Config, error) {
	w := layer.NewStreamWriter(pw, layer.WriterOptions{ModTime: modTime(p.t.Image), TempDir: o.TempDir})
	cfg, err := p.produce(&layerSink{w: w})
	err = p.t.check(err)
	if err == nil {
		_, err = w.Close()
	} else {
		w.Abort()
	}
	pw.CloseWithError(err) // nil: EOF, the layer is complete
	return cfg, err
}

// pushError is the error of a push from the producer's and the upload's:
// the producer's unless it only saw the upload stop (errPushEnded, or the
// pipe closed by the uploader).
func pushError(produced, upload error) error {
	if produced != nil && !errors.Is(produced, errPushEnded) && !(upload != nil && errors.Is(produced, io.ErrClosedPipe)) {
		return produced // the cause; the upload failed because of it
	}
	if upload != nil {
		return upload
	}
	return produced
}

// pushLayerFirst is push for a plan whose image is read while it produces
// (plan.overlap): the layer is uploaded on its own while it is produced
// (oci.WriteLayer), and the image (base layers, config, manifest) is
// written after, when the kept base layers are known; the layer is then
// in the registry already and is not uploaded again. When producing
// fails, the upload is aborted, and no manifest is pushed.
func (p *plan) pushLayerFirst(ctx context.Context, dst oci.Ref, oo oci.Options, o Options, pr *io.PipeReader, pw *io.PipeWriter, sl v1.Layer) (v1.Hash, *protocol.Config, error) {
	uploaded := make(chan error, 1)
	go func() {
		err := oci.WriteLayer(ctx, dst, sl, oo)
		pr.CloseWithError(errPushEnded) // unblocks the producer if the upload stopped early
		uploaded <- err
	}()
	cfg, err := p.produceInto(pw, o)
	if err := pushError(err, <-uploaded); err != nil {
		return v1.Hash{}, nil, err
	}
	img, err := p.rebase(sl)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	d, err := oci.Write(ctx, dst, img, oo)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	return d, cfg, nil
}
