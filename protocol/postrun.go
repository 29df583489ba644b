package protocol

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"sync"
)

// PostRun is one station's post-run (SPEC post-run steps 2–5) as a
// session that keeps the protocol's order:
//
//	s := protocol.NewPostRun(st)
//	defer s.Close()
//	err := s.EncryptResults(resultsPlain, out) // needs no config
//	trainPlain, err := s.CheckTrain(cfg, train, results, spool)
//	res, err := s.Finish() // signs; out gets the train files and res the config
//
// EncryptResults and CheckTrain (or CheckPlainTrain, for a train whose
// files are plaintext) may run in either order, also at the same time in
// two goroutines: the new results are encrypted with a fresh key and
// hashed while the train is still being read. Finish needs both to have
// succeeded, waits for the check of the previous results that CheckTrain
// left running, and signs only when every check passed. A step called
// out of order, twice, or after Finish or Close returns ErrPostRunOrder.
type PostRun struct {
	st Station

	mu                   sync.Mutex
	encrypting, checking bool // the step has started
	encrypted, checked   bool // the step has succeeded
	done                 bool // Finish or Close was called
	out                  Sink
	key                  []byte       // the new results' key
	rh                   *resultsHash // the new results, without the session id
	cfg                  *Config
	trainPlain           fs.FS
	pos                  int
	status               *Status
	spool                Spool
	prev                 chan error // the previous results' check, when it runs
	prevOnce             sync.Once
	prevErr              error
}

// PostRunResult is a post-run's new config and key file.
type PostRunResult struct {
	Config      *Config
	ConfigJSON  []byte
	UserKeyFile []byte // raw wrapped key for /opt/user_sym_key.key
}

// Spool keeps a post-run's decrypted train files between
// PostRun.CheckTrain and PostRun.Finish: a Sink that gives back what was
// written under dir ("pht_train") as a file system. PostRun.Close closes
// it.
type Spool interface {
	Sink
	FS(dir string) (fs.FS, error)
	Close() error
}

// NewPostRun starts station st's post-run.
func NewPostRun(st Station) *PostRun { return &PostRun{st: st} }

// start marks a step as started; ok says whether it may.
func (s *PostRun) start(started *bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *started || s.done {
		return false
	}
	*started = true
	return true
}

func orderError(step, why string) error {
	return fmt.Errorf("post-run %s: %w: %s", step, ErrPostRunOrder, why)
}

// EncryptResults encrypts every file of resultsPlain, in walk order, with
// a fresh key into out as "pht_results/…" (exact sizes, a fresh IV per
// file), hashing the plaintext for the result hash. out also receives the
// train files in Finish.
func (s *PostRun) EncryptResults(resultsPlain fs.FS, out Sink) error {
	if !s.start(&s.encrypting) {
		return orderError("EncryptResults", "called twice or after Finish or Close")
	}
	key, err := newSymmetricKey()
	if err != nil {
		return err
	}
	rh, err := hashResults(resultsPlain, func(name string, w io.Writer) error {
		return encryptFile(resultsPlain, name, "pht_results", key, w, out)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done { // closed meanwhile
		rh.close()
		return orderError("EncryptResults", "closed while encrypting")
	}
	s.out, s.key, s.rh, s.encrypted = out, key, rh, true
	return nil
}

// CheckTrain checks an encrypted train for post-run: everything pre-run
// checks (station key, key unwrap, decryption and immutable hash of the
// train files, signatures, whose turn it is) and that the signed config
// will fit its size limit. The decrypted train files go to spool and are
// returned from it; they are encrypted again with the new key in Finish.
// The session takes spool over: Close closes it. After the first
// station, the previous results (in results, encrypted) are decrypted and
// checked against result_hash in a goroutine of their own (on another
// core), which Finish and Wait wait for.
func (s *PostRun) CheckTrain(cfg *Config, train, results fs.FS, spool Spool) (fs.FS, error) {
	if !s.start(&s.checking) {
		spool.Close()
		return nil, orderError("CheckTrain", "the train was checked already, or Finish or Close was called")
	}
	s.mu.Lock()
	s.spool = spool
	s.mu.Unlock()
	pr, err := preRunCheckTrain(cfg, train, s.st, spool)
	if err != nil {
		return nil, err
	}
	if err := checkWriteBack(cfg, pr.Index); err != nil {
		return nil, err
	}
	trainPlain, err := spool.FS("pht_train")
	if err != nil {
		return nil, fmt.Errorf("pht_train: reading the decrypted files back: %w", err)
	}
	status, _ := Verify(cfg) // passed in preRunCheckTrain
	s.mu.Lock()
	defer s.mu.Unlock()
	if !pr.First {
		s.prev = make(chan error, 1)
		go func() { s.prev <- decryptResults(cfg, results, pr.SymKey, nil) }()
	}
	s.cfg, s.trainPlain, s.pos, s.status, s.checked = cfg, trainPlain, pr.Index, status, true
	return trainPlain, nil
}

// CheckPlainTrain is CheckTrain for a train whose files are plaintext (a
// pre-run's output, or an image committed after the run): the station is
// on the route and it is its turn, the train files are exactly file_list
// (+ query.json) with the immutable hash, the signatures verify and the
// signed config will fit its size limit.
func (s *PostRun) CheckPlainTrain(cfg *Config, trainPlain fs.FS) error {
	if !s.start(&s.checking) {
		return orderError("CheckPlainTrain", "the train was checked already, or Finish or Close was called")
	}
	pos, status, err := postRunChecks(cfg, trainPlain, s.st)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg, s.trainPlain, s.pos, s.status, s.checked = cfg, trainPlain, pos, status, true
	return nil
}

// Wait waits for the check of the previous results that CheckTrain left
// running and returns its error (nil when none runs).
func (s *PostRun) Wait() error {
	s.mu.Lock()
	prev := s.prev
	s.mu.Unlock()
	if prev == nil {
		return nil
	}
	s.prevOnce.Do(func() { s.prevErr = <-prev })
	return s.prevErr
}

// Finish completes and signs the result hash, appends the chain entry,
// encrypts the train files with the results' key into out (after the
// results) as "pht_train/…", and returns the new config with every key
// wrapped. It needs EncryptResults and a train check to have succeeded,
// and returns the previous results' check's error, signing nothing, when
// that failed.
func (s *PostRun) Finish() (*PostRunResult, error) {
	s.mu.Lock()
	var why string
	switch {
	case s.done:
		why = "called after Finish or Close"
	case !s.encrypted:
		why = "the results are not encrypted"
	case !s.checked:
		why = "the train is not checked"
	}
	if why == "" {
		s.done = true
	}
	s.mu.Unlock()
	if why != "" {
		return nil, orderError("Finish", why)
	}
	defer s.rh.close()
	if err := s.Wait(); err != nil {
		return nil, err // the train does not verify: no signed config
	}
	return s.finish()
}

// Close releases the session: it waits for the previous results' check,
// stops the results' hashing and closes the spool (also after a failed
// CheckTrain). Idempotent; after it every step returns ErrPostRunOrder.
// It must not run while CheckTrain or Finish does (EncryptResults may run:
// it then fails).
func (s *PostRun) Close() {
	s.mu.Lock()
	s.done = true
	rh, spool := s.rh, s.spool
	s.spool = nil
	s.mu.Unlock()
	s.Wait()
	rh.close()
	if spool != nil {
		spool.Close()
	}
}

// postRunChecks are the checks of post-run on plaintext train files
// before anything is signed: the station is on the route and has not
// signed yet, the signed config will fit, the train files are unchanged,
// the previous station has signed.
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

// finish is Finish once every check passed: the signatures, the train
// files and the new config.
func (s *PostRun) finish() (*PostRunResult, error) {
	cfg, st, key, pos := s.cfg, s.st, s.key, s.pos
	sid, _ := hex.DecodeString(cfg.SessionID)
	rh := s.rh.sum(sid)
	rsig, err := signPSS(st.Key, rh)
	if err != nil {
		return nil, err
	}
	var earlier [][]byte
	route := cfg.sortedRoute()
	for _, i := range s.status.Done {
		d, _ := hex.DecodeString(route[i].Signature.Digest)
		earlier = append(earlier, d)
	}
	digest := chainDigest(sid, earlier, rh)
	csig, err := signPSS(st.Key, digest)
	if err != nil {
		return nil, err
	}
	if err := encryptTree(s.trainPlain, "pht_train", key, s.out); err != nil {
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
	w, err := wrapKey(pub, key)
	if err != nil {
		return fmt.Errorf("%s: wrapping the key: %w", field, err)
	}
	s := hex.EncodeToString(w)
	*dst = &s
	return nil
}

// smallFile is the size up to which encryptFile encrypts a file in the
// calling goroutine.
const smallFile = 64 << 10

var smallBufs = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, smallFile+64)) }}

// encryptTree writes every regular file of fsys, in walk order, encrypted
// with key to out as prefix/name.
func encryptTree(fsys fs.FS, prefix string, key []byte, out Sink) error {
	return WalkFiles(fsys, func(name string, _ int64) error {
		return encryptFile(fsys, name, prefix, key, nil, out)
	})
}

// encryptFile writes fsys's file name encrypted with key to out as
// prefix/name; when h is set the plaintext is hashed on the way (in the
// encrypting goroutine, so hashing and encryption overlap with the
// consumer's compression and I/O).
func encryptFile(fsys fs.FS, name, prefix string, key []byte, h io.Writer, out Sink) error {
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", prefix, name, err)
	}
	defer f.Close()
	// Type and size from the open file, not from the listing: the file
	// may have been replaced in between.
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
		if err := encryptStream(bp, src, key); err != nil {
			return fmt.Errorf("%s/%s: %w", prefix, name, err)
		}
		return out.WriteFile(prefix+"/"+name, EncryptedSize(size), bp)
	}
	r := newEncryptReader(src, key)
	defer r.Close()
	return out.WriteFile(prefix+"/"+name, EncryptedSize(size), r)
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
