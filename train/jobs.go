package train

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/phtoci/phtoci/internal/fsutil"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
)

// Env says where images come from and go to (oci.Options) and how trains
// are read and written (Options). The zero value works.
type Env struct {
	OCI oci.Options
	Options
	// DryRun makes PreRunJob and PostRunJob run every check and make the
	// new layer (in a temporary file, removed), then report the output
	// and its size (JobResult.DryRun) without writing it: no output, no
	// previous results directory, nothing recorded in the station ledger.
	DryRun bool
}

// JobResult describes an image a job wrote.
type JobResult struct {
	Step    string `json:"step"`
	Input   string `json:"input"`
	Output  string `json:"output"`
	Digest  string `json:"digest"`
	Station string `json:"station,omitempty"`
	// Next is the route index of the station that runs next (-1: the route is done).
	Next int `json:"next"`
	// NextStation is the id of that station (absent when the route is done).
	NextStation string           `json:"next_station,omitempty"`
	Config      *protocol.Config `json:"-"`
	// ResultsDir is where pre-run wrote the previous results
	// (Options.PreviousResultsDir).
	ResultsDir string `json:"resultsDir,omitempty"`
	// DryRun: every check ran and the new layer was made, but nothing was
	// written (Env.DryRun); Output is where it would go, Size the bytes
	// of the image's blobs and manifest, LayerSize the new layer's. Digest
	// is empty: the destination decides the final form.
	DryRun    bool  `json:"dryRun,omitempty"`
	Size      int64 `json:"size,omitempty"`
	LayerSize int64 `json:"layerSize,omitempty"`
	// Platform says which image of an input index the step took, and why.
	Platform string `json:"platform,omitempty"`
}

func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

func openInput(ctx context.Context, input string, env Env) (oci.Ref, v1.Image, error) {
	ref, err := oci.ParseRef(input)
	if err != nil {
		return oci.Ref{}, nil, err
	}
	img, err := oci.Open(ctx, ref, env.OCI)
	if err != nil {
		return oci.Ref{}, nil, err
	}
	return ref, img, nil
}

// notOver is env with the job's input in, and a master image env.Master
// names, among the images oci.Write must not write over (oci.Options.Inputs).
func (env Env) notOver(in oci.Ref) Env {
	env.OCI.Inputs = append(slices.Clip(env.OCI.Inputs), in)
	if env.Master != "" {
		if m, err := oci.ParseRef(env.Master); err == nil {
			env.OCI.Inputs = append(env.OCI.Inputs, m)
		}
	}
	return env
}

// expectTag reads what the registry tag dst points at as the job begins:
// the push moves the tag only if it still points there (another job's
// push meanwhile is a lost update, oci.ErrLostUpdate, never overwritten
// unreported). Other outputs, and a tag that cannot be read now (the push
// reports why), are returned as they are.
func (env Env) expectTag(ctx context.Context, dst oci.Ref) (Env, error) {
	if _, ok := dst.Name().(name.Tag); !ok {
		return env, nil
	}
	d, err := oci.Digest(ctx, dst, env.OCI)
	if err != nil && !errors.Is(err, oci.ErrNotFound) {
		return env, nil
	}
	env.OCI.ExpectTag = &d
	return env, nil
}

// outputRef is output parsed, or when it is "" the default def(suffix).
func outputRef(output string, def func(suffix string) oci.Ref, suffix string) (oci.Ref, error) {
	if output == "" {
		return def(suffix), nil
	}
	return oci.ParseOutputRef(output)
}

// forOutput is env's Options with the compression resolved for dst and
// img (the image the new layer goes on) and the new layer's file placed
// where dst can take it over.
func (env Env) forOutput(dst oci.Ref, img v1.Image) Options {
	o := env.Options
	st := dst.Staging(img)
	o.Compression = o.Compression.forOutput(st.Plain)
	if o.LayerDir == "" {
		o.LayerDir, o.LayerReserve = st.Dir, st.Reserve
	}
	return o
}

// write produces p's layer and writes the image to dst: streamed to a
// registry while it is produced (see push), else through a file the
// destination may take over.
func (p *plan) write(ctx context.Context, dst oci.Ref, env Env, res *JobResult) (*JobResult, error) {
	o := env.forOutput(dst, p.t.Image)
	var d v1.Hash
	var cfg *protocol.Config
	if dst.Staging(p.t.Image).Stream {
		var err error
		if d, cfg, err = p.push(ctx, dst, env.OCI, o); err != nil {
			return nil, err
		}
	} else {
		bar := oci.NewProgress(env.OCI, -1, "making the new layer")
		if bar != nil && o.LayerProgress == nil {
			o.LayerProgress, o.LayerTotal = bar.Add, bar.SetTotal
		}
		out, err := p.toFile(o)
		bar.Finish()
		if errors.Is(err, layer.ErrLayerFile) {
			return nil, fmt.Errorf("writing %s: %w", dst, err)
		}
		if err != nil {
			return nil, err
		}
		defer out.Close()
		if d, err = oci.Write(ctx, dst, out.Image, env.OCI); err != nil {
			return nil, err
		}
		cfg = out.Config
	}
	res.Output, res.Digest = dst.String(), d.String()
	res.setNext(cfg)
	return res, nil
}

// setNext sets the config the step wrote and the station it says is next.
func (res *JobResult) setNext(cfg *protocol.Config) {
	res.Config, res.Next = cfg, -1
	if cfg != nil {
		if st, err := protocol.Verify(cfg); err == nil {
			res.Next = st.Next
			if r := cfg.SortedRoute(); st.Next >= 0 && st.Next < len(r) {
				res.NextStation = string(r[st.Next].Station)
			}
		}
	}
}

// PreRunJob runs pre-run on the image at input and writes the decrypted
// image to output ("" = the input's PrivateOutput("decrypted"): for a
// registry input the oci-archive REPOSITORY_TAG.decrypted.oci.tar in the
// current directory, never the registry, as the image holds plaintext;
// DefaultOutput("decrypted") for a file or layout), and with
// env.PreviousResultsDir the decrypted previous results into that
// directory. Nothing is written when a check fails.
func PreRunJob(ctx context.Context, input, output string, st protocol.Station, env Env) (*JobResult, error) {
	if env.PreviousResultsDir != "" {
		if err := checkResultsDir(env.PreviousResultsDir); err != nil {
			return nil, err // before any download
		}
	}
	in, img, env, picked, err := openRunInput(ctx, input, env)
	if err != nil {
		return nil, err
	}
	env = env.notOver(in)
	dst, err := outputRef(output, in.PrivateOutput, "decrypted")
	if err != nil {
		return nil, err
	}
	env.Options = env.checkBaseIfAsked(ctx, in)
	if env.DryRun {
		env.PreviousResultsDir = "" // checked above; made by a real run only
	}
	p, err := planPreRun(img, st, env.forOutput(dst, img))
	if err != nil {
		return nil, err
	}
	defer p.close()
	if env.DryRun {
		return p.dryRun(ctx, dst, env, &JobResult{Step: "pre-run", Input: in.String(), Station: st.ID})
	}
	env.OCI.Private = true // plaintext: 0600 files, whatever the umask
	res, err := p.write(ctx, dst, env, &JobResult{Step: "pre-run", Input: in.String(), Station: st.ID, Platform: picked})
	if err != nil {
		return nil, err
	}
	if err := p.committed(); err != nil {
		return nil, err
	}
	res.ResultsDir = env.PreviousResultsDir
	return res, nil
}

// PostRunJob runs post-run on the image at input with the results in
// resultsDir ("" = take the plaintext results from the image; read through
// OpenResults: regular files and directories only, no symbolic link
// followed) and writes the encrypted image to output ("" = the same
// reference for a registry, a new file beside an archive).
func PostRunJob(ctx context.Context, input, resultsDir, output string, st protocol.Station, env Env) (*JobResult, error) {
	var results fs.FS
	if resultsDir != "" {
		rd, err := OpenResults(resultsDir)
		if err != nil {
			return nil, err
		}
		defer rd.Close()
		results = rd
	}
	in, img, env, picked, err := openRunInput(ctx, input, env)
	if err != nil {
		return nil, err
	}
	env = env.notOver(in)
	dst, err := outputRef(output, in.WriteBack, st.ID)
	if err != nil {
		return nil, err
	}
	if env, err = env.expectTag(ctx, dst); err != nil {
		return nil, err
	}
	env.Options = env.checkBaseIfAsked(ctx, in)
	// The train is reserved in the ledger by the check (one step with
	// looking it up); a failure drops the reservation once the step's
	// goroutines are done (p.close, deferred after this).
	hold := &ledgerHold{}
	if !env.DryRun { // a dry run only checks the ledger
		env.hold = hold
	}
	defer func() {
		if r := hold.take(); r != nil {
			r.Release()
		}
	}()
	p, err := planPostRun(img, results, st, env.forOutput(dst, img))
	if err != nil {
		return nil, err
	}
	defer p.close()
	if env.DryRun {
		return p.dryRun(ctx, dst, env, &JobResult{Step: "post-run", Input: in.String(), Station: st.ID, Platform: picked})
	}
	res, err := p.write(ctx, dst, env, &JobResult{Step: "post-run", Input: in.String(), Station: st.ID, Platform: picked})
	if err != nil {
		return nil, err
	}
	if r := hold.take(); r != nil {
		err = r.Commit()
	} else {
		err = env.recordLedger(img, res.Config, st)
	}
	if err != nil {
		return res, fmt.Errorf("post-run wrote %s (%s) but %w", res.Output, res.Digest, err)
	}
	return res, nil
}

// VerifyJob verifies the image at input (keyless; with st also the
// station's checks). An image index (OCI index, Docker manifest list) in a registry verifies
// only when each of its train children does (attestations are skipped and
// named in the report), unless env asks for one platform.
func VerifyJob(ctx context.Context, input string, st *protocol.Station, env Env) (*VerifyReport, error) {
	ref, err := oci.ParseRef(input)
	if err != nil {
		return nil, err
	}
	img, idx, err := oci.OpenIndex(ctx, ref, env.OCI)
	if err != nil {
		return nil, err
	}
	if img == nil { // an index, no platform asked for
		return verifyIndex(ctx, input, idx, st, env)
	}
	return verifyOpened(ctx, ref, img, st, env)
}

// verifyImage is VerifyJob of one image.
func verifyImage(ctx context.Context, input string, st *protocol.Station, env Env) (*VerifyReport, error) {
	ref, img, err := openInput(ctx, input, env)
	if err != nil {
		return nil, err
	}
	return verifyOpened(ctx, ref, img, st, env)
}

// verifyOpened verifies img, opened from ref.
func verifyOpened(ctx context.Context, ref oci.Ref, img v1.Image, st *protocol.Station, env Env) (*VerifyReport, error) {
	// Every layer is there, base layers too (which are not read).
	if err := oci.CheckLayers(ctx, ref, img, env.OCI); err != nil {
		return nil, err
	}
	env.Options = env.checkBaseIfAsked(ctx, ref)
	return Verify(img, st, env.Options)
}

// DecryptJob verifies the image at input as its creator, writes the
// results (and train files when withTrain) under outDir and reports the
// route's state (whether every station signed): Decrypt.
func DecryptJob(ctx context.Context, input string, userKey *rsa.PrivateKey, outDir string, withTrain bool, env Env) (*DecryptResult, error) {
	_, img, err := openInput(ctx, input, env)
	if err != nil {
		return nil, err
	}
	env.Options.ctx = ctx
	return Decrypt(img, userKey, outDir, withTrain, env.Options)
}

// InspectJob describes the image at input.
func InspectJob(ctx context.Context, input string, env Env) (*Inspection, error) {
	_, img, err := openInput(ctx, input, env)
	if err != nil {
		return nil, err
	}
	o := env.Options
	o.Trust = nil // inspect reports; it does not enforce
	return Inspect(img, o)
}

// BuildJob makes a train on the base image at from with the train files in
// filesDir plus queryFile (copied in as query.json) and writes it to output.
func BuildJob(ctx context.Context, from, filesDir, queryFile, output string, bo protocol.BuildOptions, env Env) (*JobResult, error) {
	if output == "" {
		return nil, usagef("build needs an output (-o DEST)")
	}
	dst, err := oci.ParseOutputRef(output)
	if err != nil {
		return nil, err
	}
	files, cleanup, err := trainFiles(filesDir, queryFile, env.TempDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	in, img, err := openInput(ctx, from, env)
	if err != nil {
		return nil, err
	}
	env = env.notOver(in)
	if n := in.Name(); bo.Source.Address == "" && n != nil {
		bo.Source = protocol.Source{Type: "docker_repository", Address: n.Context().Name(), Tag: n.Identifier()}
	}
	p, err := planBuild(img, files, bo)
	if err != nil {
		return nil, err
	}
	defer p.close()
	return p.write(ctx, dst, env, &JobResult{Step: "build", Input: in.String()})
}

// trainFiles returns filesDir with queryFile added as query.json. When a
// query file is given, the files are copied into a temporary directory (train
// files are code and small).
func trainFiles(filesDir, queryFile, tmpDir string) (fs.FS, func(), error) {
	if fi, err := os.Stat(filesDir); err != nil || !fi.IsDir() {
		if err == nil {
			err = fs.ErrInvalid
		}
		return nil, nil, fmt.Errorf("train files directory %s: %w", filesDir, err)
	}
	if queryFile == "" {
		return os.DirFS(filesDir), func() {}, nil
	}
	d, err := fsutil.MkdirPrivate(tmpDir, "phtoci-build-")
	if err != nil {
		return nil, nil, err
	}
	tmp, cleanup := d.Path(), func() { d.Close() }
	if err := os.CopyFS(tmp, os.DirFS(filesDir)); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("copying train files from %s: %w", filesDir, err)
	}
	if err := copyFile(filepath.Join(tmp, "query.json"), queryFile); err != nil {
		cleanup()
		return nil, nil, err
	}
	return os.DirFS(tmp), cleanup, nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
