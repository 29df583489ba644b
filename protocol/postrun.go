package protocol

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/phtoci/phtoci/internal/asynchash"
)

// PostRunResult is a post-run's new config and key file.
type PostRunResult struct {
	Config      *Config
	ConfigJSON  []byte
	UserKeyFile []byte // raw wrapped key for /opt/user_sym_key.key
}

// PostRunUpdate runs SPEC post-run steps 2–5 on plaintext train files and
// the station's new plaintext results: it checks the train again, hashes and
// signs the results while encrypting them (one pass), appends the chain
// entry, and encrypts everything with a fresh key. out receives every result
// file in walk order as "pht_results/…", then the train files as
// "pht_train/…", with exact sizes and a fresh IV per file.
//
// It is EncryptNewResults then FinishPostRun, with the checks first.
func PostRunUpdate(cfg *Config, trainPlain, resultsPlain fs.FS, st Station, out Sink) (*PostRunResult, error) {
	pos, status, err := postRunChecks(cfg, trainPlain, st)
	if err != nil {
		return nil, err
	}
	nr, err := EncryptNewResults(resultsPlain, out)
	if err != nil {
		return nil, err
	}
	defer nr.Close()
	return finishPostRun(cfg, trainPlain, st, nr, out, pos, status)
}

// postRunChecks are the checks of post-run before anything is signed: the
// station is on the route and has not signed yet, the train files are
// unchanged, the previous station has signed.
func postRunChecks(cfg *Config, trainPlain fs.FS, st Station) (int, *Status, error) {
	pos, e, err := stationEntry(cfg, st)
	if err != nil {
		return 0, nil, err
	}
	if e.Signature != nil {
		return 0, nil, alreadySigned(st, pos)
	}
	if err := checkWriteBack(cfg, pos); err != nil {
		return 0, nil, err
	}
	if err := CheckTrain(cfg, trainPlain); err != nil {
		return 0, nil, err
	}
	status, _ := Verify(cfg)
	if err := turn(cfg, st, pos, e, status); err != nil {
		return 0, nil, err
	}
	return pos, status, nil
}

// NewResults is the first half of a post-run: the station's new results,
// encrypted with a fresh symmetric key and hashed on the way. It needs no
// config, so a post-run can encrypt (and upload) the results while the
// train is still being downloaded; FinishPostRun then checks the train and
// signs. Close releases it when FinishPostRun is not called.
type NewResults struct {
	key []byte
	h   *asynchash.Hash // the files; FinishPostRun appends the session ID
}

// EncryptNewResults encrypts every file of resultsPlain, in walk order, with
// a fresh key into out as "pht_results/…" (exact sizes, a fresh IV per
// file), hashing the plaintext for the result hash.
func EncryptNewResults(resultsPlain fs.FS, out Sink) (*NewResults, error) {
	key, err := NewSymmetricKey()
	if err != nil {
		return nil, err
	}
	nr := &NewResults{key: key, h: asynchash.New(sha512.New())}
	if err := encryptTree(resultsPlain, "pht_results", key, nr.h, out); err != nil {
		nr.Close()
		return nil, err
	}
	return nr, nil
}

// Close releases the hashing goroutine (idempotent).
func (n *NewResults) Close() {
	if n != nil && n.h != nil {
		n.h.Close()
	}
}

// FinishPostRun is the second half of a post-run (SPEC post-run steps 2–5
// after the results): it runs the checks of PostRunUpdate, completes and
// signs the result hash, appends the chain entry, encrypts the train files
// with the results' key into out as "pht_train/…" and returns the new
// config with every key wrapped. n cannot be used after.
func FinishPostRun(cfg *Config, trainPlain fs.FS, st Station, n *NewResults, out Sink) (*PostRunResult, error) {
	defer n.Close()
	pos, status, err := postRunChecks(cfg, trainPlain, st)
	if err != nil {
		return nil, err
	}
	return finishPostRun(cfg, trainPlain, st, n, out, pos, status)
}

func finishPostRun(cfg *Config, trainPlain fs.FS, st Station, n *NewResults, out Sink, pos int, status *Status) (*PostRunResult, error) {
	key := n.key
	sid, _ := hex.DecodeString(cfg.SessionID)
	n.h.Write(sid)
	rh := n.h.Sum()
	rsig, err := SignPSS(st.Key, rh)
	if err != nil {
		return nil, err
	}
	var earlier [][]byte
	route := cfg.sortedRoute()
	for _, i := range status.Done {
		d, _ := hex.DecodeString(route[i].Signature.Digest)
		earlier = append(earlier, d)
	}
	digest := ChainDigest(sid, earlier, rh)
	csig, err := SignPSS(st.Key, digest)
	if err != nil {
		return nil, err
	}
	if err := encryptTree(trainPlain, "pht_train", key, nil, out); err != nil {
		return nil, err
	}
	next := cfg.Clone()
	next.Route = route
	// Only the stations still to come and the creator get the new key:
	// an earlier station (or this one) must not read later results. The
	// reference's pre-run reads only its own entry, and null is how its
	// own builder leaves the entries of stations that have no key yet.
	for i := range next.Route {
		if i <= pos {
			next.Route[i].EncryptedKey = nil
			continue
		}
		if err := wrapFor(&next.Route[i].EncryptedKey, next.Route[i].RSAPublicKey, key, fmt.Sprintf("route[%d]", i)); err != nil {
			return nil, err
		}
	}
	next.Route[pos].Signature = &ChainSignature{Digest: hex.EncodeToString(digest), Signature: hex.EncodeToString(csig)}
	if err := wrapFor(&next.Creator.EncryptedKey, next.Creator.RSAPublicKey, key, "creator"); err != nil {
		return nil, err
	}
	rhs, rss := hex.EncodeToString(rh), hex.EncodeToString(rsig)
	next.ResultHash, next.ResultSignature = &rhs, &rss
	raw, err := next.Encode()
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxConfigSize { // checkWriteBack ran before: not expected
		return nil, fmt.Errorf("%w: train_config.json: %d bytes, more than the %d-byte limit", ErrInvalidConfig, len(raw), MaxConfigSize)
	}
	ukf, _ := hex.DecodeString(*next.Creator.EncryptedKey)
	return &PostRunResult{Config: next, ConfigJSON: raw, UserKeyFile: ukf}, nil
}

func wrapFor(dst **string, pubHex string, key []byte, field string) error {
	pub, err := pubKey(field+".rsa_public_key", pubHex)
	if err != nil {
		return err
	}
	w, err := WrapKey(pub, key)
	if err != nil {
		return fmt.Errorf("%s: wrapping the key: %w", field, err)
	}
	s := hex.EncodeToString(w)
	*dst = &s
	return nil
}

// smallFile is the size up to which encryptTree encrypts a file in the
// calling goroutine.
const smallFile = 64 << 10

var smallBufs = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, smallFile+64)) }}

// encryptTree writes every regular file of fsys, in walk order, encrypted
// with key to out as prefix/name; when h is set the plaintext is hashed on
// the way (in the encrypting goroutine, so hashing and encryption overlap
// with the consumer's compression and I/O).
func encryptTree(fsys fs.FS, prefix string, key []byte, h io.Writer, out Sink) error {
	return WalkFiles(fsys, func(name string, _ int64) error {
		f, err := fsys.Open(name)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", prefix, name, err)
		}
		defer f.Close()
		// Type and size from the open file, not from the listing: the
		// file may have been replaced in between.
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("%s/%s: %w", prefix, name, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s/%s: not a regular file (%v)", prefix, name, fi.Mode().Type())
		}
		size := fi.Size()
		var src io.Reader = io.LimitReader(f, size)
		if h != nil {
			src = io.TeeReader(src, h)
		}
		src = &exactReader{r: src, want: size, name: prefix + "/" + name}
		if size <= smallFile {
			// Encrypt in place: for a hundred thousand small results a
			// goroutine and a pipe each would cost more than the crypto.
			bp := smallBufs.Get().(*bytes.Buffer)
			defer smallBufs.Put(bp)
			bp.Reset()
			if err := EncryptStream(bp, src, key); err != nil {
				return fmt.Errorf("%s/%s: %w", prefix, name, err)
			}
			return out.WriteFile(prefix+"/"+name, EncryptedSize(size), bp)
		}
		r := NewEncryptReader(src, key)
		defer r.Close()
		return out.WriteFile(prefix+"/"+name, EncryptedSize(size), r)
	})
}

// exactReader fails when a file yields fewer bytes than its size said (it
// changed while being read).
type exactReader struct {
	r    io.Reader
	want int64
	got  int64
	name string
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.got += int64(n)
	if err == io.EOF && e.got != e.want {
		return n, fmt.Errorf("%s: read %d bytes, expected %d (file changed while reading)", e.name, e.got, e.want)
	}
	return n, err
}
