package protocol

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/phtoci/phtoci/internal/asynchash"
	"github.com/phtoci/phtoci/keys"
)

// Sink receives the files a step produces.
type Sink interface {
	// WriteFile stores one regular file. name is relative to /opt, e.g.
	// "pht_train/entrypoint.py" or "pht_results/sub/data.bin". size is the
	// exact number of bytes r yields, or -1 when not known in advance.
	// For large files r also implements io.WriterTo, which encrypts or
	// decrypts in the calling goroutine straight into the destination:
	// a sink that copies r with io.Copy gets that, without a pipe.
	WriteFile(name string, size int64, r io.Reader) error
}

// DirSink writes files under dir, creating parent directories. What it
// writes is plaintext (decrypted results and train files): files are
// created 0600 and directories 0700, whatever the umask.
func DirSink(dir string) Sink { return dirSink(dir) }

type dirSink string

func (d dirSink) WriteFile(name string, _ int64, r io.Reader) error {
	p := filepath.Join(string(d), filepath.FromSlash(name))
	if !strings.HasPrefix(p, filepath.Clean(string(d))+string(filepath.Separator)) {
		return fmt.Errorf("%s: path escapes the output directory", name)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Station is a station's identity: its id on the route and private key.
type Station struct {
	ID  string
	Key *rsa.PrivateKey
}

// Status is where a train is on its route.
type Status struct {
	Done []int `json:"done"` // positions (route ordered by index) that have signed
	Next int   `json:"next"` // position of the next station, -1 when finished
}

func mustHex(field, s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not hex", ErrInvalidConfig, field)
	}
	return b, nil
}

func pubKey(field, s string) (*rsa.PublicKey, error) {
	k, err := keys.ParsePublicKeyHex(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, field, err)
	}
	return k, nil
}

// Verify runs every check that needs no private key: user signature over
// hash, builder signature, the result signature with the last signing
// station's key, every chain signature, the recomputation of the last chain
// digest, and the structural rules (no false "first station", keys of at
// least MinKeyBits, no station twice on the route).
func Verify(cfg *Config) (*Status, error) {
	if err := checkParties(cfg); err != nil {
		return nil, err
	}
	hash, err := mustHex("hash", cfg.Hash)
	if err != nil {
		return nil, err
	}
	if len(hash) != sha512.Size {
		return nil, fmt.Errorf("%w: hash: %d bytes, expected 64", ErrInvalidConfig, len(hash))
	}
	userSig, _ := mustHex("signature", cfg.Signature)
	buildSig, _ := mustHex("build.signature", cfg.Build.Signature)
	creator, err := pubKey("creator.rsa_public_key", cfg.Creator.RSAPublicKey)
	if err != nil {
		return nil, err
	}
	builder, err := pubKey("build.rsa_public_key", cfg.Build.RSAPublicKey)
	if err != nil {
		return nil, err
	}
	if err := VerifyUser(creator, hash, userSig); err != nil {
		return nil, fmt.Errorf("signature: %w with creator %s's key", ErrUserSignature, cfg.Creator.ID)
	}
	if err := VerifyBuilder(builder, hash, userSig, buildSig); err != nil {
		return nil, fmt.Errorf("build.signature: %w", ErrBuilderSignature)
	}
	sid, _ := hex.DecodeString(cfg.SessionID)
	route := cfg.sortedRoute()
	st := &Status{Next: -1}
	var digests [][]byte
	for i, r := range route {
		if r.Signature == nil {
			if st.Next < 0 {
				st.Next = i
			}
			continue
		}
		if st.Next >= 0 {
			return nil, fmt.Errorf("route[%d] (station %s): %w: signed after station %s, which has not", i, r.Station, ErrChainSignature, route[st.Next].Station)
		}
		pub, err := pubKey(fmt.Sprintf("route[%d].rsa_public_key", i), r.RSAPublicKey)
		if err != nil {
			return nil, err
		}
		d, _ := hex.DecodeString(r.Signature.Digest)
		sig, _ := hex.DecodeString(r.Signature.Signature)
		if err := VerifyPSS(pub, d, sig); err != nil {
			return nil, fmt.Errorf("route[%d].signature (station %s): %w", i, r.Station, ErrChainSignature)
		}
		st.Done = append(st.Done, i)
		digests = append(digests, d)
	}
	if len(st.Done) == 0 {
		if cfg.ResultHash != nil || cfg.ResultSignature != nil {
			return nil, fmt.Errorf("result_hash: %w: set although no station has signed", ErrResultSignature)
		}
		return st, nil
	}
	last := route[st.Done[len(st.Done)-1]]
	if cfg.ResultHash == nil || cfg.ResultSignature == nil {
		return nil, fmt.Errorf("result_hash: %w: null although station %s has signed; a station after it is never first", ErrPreviousResultsChanged, last.Station)
	}
	rh, _ := hex.DecodeString(*cfg.ResultHash)
	rs, _ := hex.DecodeString(*cfg.ResultSignature)
	lastPub, _ := pubKey("", last.RSAPublicKey)
	if err := VerifyPSS(lastPub, rh, rs); err != nil {
		return nil, fmt.Errorf("result_signature: %w with station %s's key", ErrResultSignature, last.Station)
	}
	n := len(digests) - 1
	if want := ChainDigest(sid, digests[:n], rh); !bytes.Equal(want, digests[n]) {
		return nil, fmt.Errorf("route[%d].signature.digest (station %s): %w: does not match the digest recomputed from earlier digests and result_hash", st.Done[n], last.Station, ErrChainSignature)
	}
	return st, nil
}

// CheckFileNames compares the names of the regular files in train
// (/opt/pht_train) with file_list + query.json: names are visible without
// the key, so keyless verification uses it too.
func CheckFileNames(cfg *Config, train fs.FS) error { return checkNames(cfg, train) }

func checkNames(cfg *Config, train fs.FS) error {
	want := map[string]bool{}
	for _, n := range cfg.FileList {
		n = strings.TrimPrefix(n, "./")
		if n == "query.json" {
			return fmt.Errorf("file_list: %w: query.json must not be listed (it is hashed last)", ErrInvalidConfig)
		}
		want[n] = true
	}
	err := WalkFiles(train, func(name string, _ int64) error {
		if name == "query.json" {
			return nil
		}
		if !want[name] {
			return fmt.Errorf("pht_train/%s: %w: not in file_list", name, ErrUnsignedFile)
		}
		delete(want, name)
		return nil
	})
	if err != nil {
		return err
	}
	for _, n := range cfg.FileList {
		if want[strings.TrimPrefix(n, "./")] {
			return fmt.Errorf("pht_train/%s: %w: listed in file_list but missing", n, ErrImmutableChanged)
		}
	}
	return nil
}

// CheckTrain checks plaintext train files: exactly file_list + query.json,
// the immutable hash, and (via Verify's first steps) the user and builder
// signatures.
func CheckTrain(cfg *Config, trainPlain fs.FS) error {
	if err := checkNames(cfg, trainPlain); err != nil {
		return err
	}
	sid, _ := hex.DecodeString(cfg.SessionID)
	h, err := ImmutableHash(cfg.Creator.ID, cfg.FileList, sid, trainPlain)
	if err != nil {
		return err
	}
	if hex.EncodeToString(h) != strings.ToLower(cfg.Hash) {
		return fmt.Errorf("hash: %w: the train files' immutable hash does not match the config", ErrImmutableChanged)
	}
	_, err = Verify(cfg)
	return err
}

// PreRunResult is what pre-run learned.
type PreRunResult struct {
	Index  int  // position of the station in the route
	First  bool // no earlier results
	SymKey []byte
}

// stationEntry finds st on the route and checks its key.
func stationEntry(cfg *Config, st Station) (int, RouteEntry, error) {
	pos, err := cfg.StationIndex(st.ID)
	if err != nil {
		return -1, RouteEntry{}, err
	}
	e := cfg.sortedRoute()[pos]
	pub, err := pubKey(fmt.Sprintf("route[%d].rsa_public_key", pos), e.RSAPublicKey)
	if err != nil {
		return -1, e, err
	}
	if st.Key == nil || !keys.Equal(pub, &st.Key.PublicKey) {
		return -1, e, fmt.Errorf("station %s: %w: the key's public half (%s) differs from route[%d].rsa_public_key (%s)",
			st.ID, ErrWrongPrivateKey, fpOf(st.Key), pos, keys.Fingerprint(pub))
	}
	return pos, e, nil
}

func fpOf(k *rsa.PrivateKey) string {
	if k == nil {
		return "none"
	}
	return keys.Fingerprint(&k.PublicKey)
}

// decryptTo decrypts fsys/name into w (and out when not nil, as
// prefix/name).
func decryptTo(fsys fs.FS, name, prefix string, key []byte, w io.Writer, out Sink) error {
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", prefix, name, err)
	}
	defer f.Close()
	if out == nil {
		if err := DecryptStream(w, f, key); err != nil {
			return fmt.Errorf("%s/%s: %w", prefix, name, err)
		}
		return nil
	}
	if fi, err := f.Stat(); err == nil && fi.Size() <= smallFile {
		// Decrypt in place (see encryptTree).
		bp := smallBufs.Get().(*bytes.Buffer)
		defer smallBufs.Put(bp)
		bp.Reset()
		if err := DecryptStream(io.MultiWriter(w, bp), f, key); err != nil {
			return fmt.Errorf("%s/%s: %w", prefix, name, err)
		}
		return out.WriteFile(prefix+"/"+name, int64(bp.Len()), bp)
	}
	size := PlaintextSize(f, key)
	r := &cryptReader{run: func(dst io.Writer) error { return DecryptStream(io.MultiWriter(w, dst), f, key) }}
	werr := out.WriteFile(prefix+"/"+name, size, r)
	r.Close()
	if derr := r.Err(); derr != nil {
		return fmt.Errorf("%s/%s: %w", prefix, name, derr)
	}
	return werr
}

// decryptTrain decrypts every train file (file_list order, then query.json)
// and checks the immutable hash.
func decryptTrain(cfg *Config, train fs.FS, key []byte, out Sink) error {
	if err := checkNames(cfg, train); err != nil {
		return err
	}
	sid, _ := hex.DecodeString(cfg.SessionID)
	h := sha512.New()
	h.Write([]byte(cfg.Creator.ID))
	done := map[string]bool{}
	for _, n := range cfg.FileList {
		n = strings.TrimPrefix(n, "./")
		if done[n] {
			continue
		}
		done[n] = true
		if err := decryptTo(train, n, "pht_train", key, h, out); err != nil {
			return integrity(err, errTrainIntegrity)
		}
	}
	h.Write(sid)
	if _, err := fs.Stat(train, "query.json"); err == nil {
		if err := decryptTo(train, "query.json", "pht_train", key, h, out); err != nil {
			return integrity(err, errTrainIntegrity)
		}
	}
	if hex.EncodeToString(h.Sum(nil)) != strings.ToLower(cfg.Hash) {
		return errTrainIntegrity // the same error as bad padding: no oracle
	}
	return nil
}

// decryptResults decrypts every result file in walk order and checks
// result_hash.
func decryptResults(cfg *Config, results fs.FS, key []byte, out Sink) error {
	sid, _ := hex.DecodeString(cfg.SessionID)
	h := asynchash.New(sha512.New())
	defer h.Close()
	err := WalkFiles(results, func(name string, _ int64) error {
		return decryptTo(results, name, "pht_results", key, h, out)
	})
	if err != nil {
		return integrity(err, errResultsIntegrity)
	}
	h.Write(sid)
	if cfg.ResultHash == nil || hex.EncodeToString(h.Sum()) != strings.ToLower(*cfg.ResultHash) {
		return errResultsIntegrity // the same error as bad padding: no oracle
	}
	return nil
}

// PreRunCheck runs SPEC pre-run steps 1–6 for station st: key check, key
// unwrap, decryption and immutable hash of the train files, signatures, and
// (after the first station) the previous results, result signature and
// chain. Plaintext goes to out (nil: verify only); on error, discard out.
func PreRunCheck(cfg *Config, train, results fs.FS, st Station, out Sink) (*PreRunResult, error) {
	r, err := PreRunCheckTrain(cfg, train, st, out)
	if err != nil {
		return nil, err
	}
	if !r.First {
		if err := CheckPreviousResults(cfg, results, r.SymKey, out); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// PreRunCheckTrain is PreRunCheck up to the previous results: the key
// check, key unwrap, decryption and immutable hash of the train files and
// the config's signatures. Unless the result says First, the caller must
// also run CheckPreviousResults and act on its error before it writes
// anything (post-run runs it next to encrypting the new results).
func PreRunCheckTrain(cfg *Config, train fs.FS, st Station, out Sink) (*PreRunResult, error) {
	pos, e, err := stationEntry(cfg, st)
	if err != nil {
		return nil, err
	}
	status, err := Verify(cfg)
	if err != nil {
		return nil, err
	}
	if err := turn(cfg, st, pos, e, status); err != nil {
		return nil, err
	}
	if e.EncryptedKey == nil {
		return nil, fmt.Errorf("route[%d].encrypted_key (station %s): %w: null, no key for this station", pos, st.ID, ErrDecryption)
	}
	wrapped, err := mustHex(fmt.Sprintf("route[%d].encrypted_key", pos), *e.EncryptedKey)
	if err != nil {
		return nil, err
	}
	key, err := UnwrapKey(st.Key, wrapped)
	if err != nil {
		return nil, fmt.Errorf("route[%d].encrypted_key (station %s): %w", pos, st.ID, err)
	}
	if err := decryptTrain(cfg, train, key, out); err != nil {
		return nil, err
	}
	return &PreRunResult{Index: pos, First: len(status.Done) == 0, SymKey: key}, nil
}

// CheckPreviousResults decrypts the previous station's results with the
// train's symmetric key (PreRunResult.SymKey), writes them to out (nil:
// verify only) and checks them against the config's result_hash.
func CheckPreviousResults(cfg *Config, results fs.FS, key []byte, out Sink) error {
	return decryptResults(cfg, results, key, out)
}

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
