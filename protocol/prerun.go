package protocol

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// decryptTo decrypts fsys/name into w (and out when not nil, as
// prefix/name).
func decryptTo(fsys fs.FS, name, prefix string, key []byte, w io.Writer, out Sink) error {
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", prefix, name, err)
	}
	defer f.Close()
	if out == nil {
		if err := decryptStream(w, f, key); err != nil {
			return fmt.Errorf("%s/%s: %w", prefix, name, err)
		}
		return nil
	}
	if fi, err := f.Stat(); err == nil && fi.Size() <= smallFile {
		// Decrypt in place (see encryptFile).
		bp := smallBufs.Get().(*bytes.Buffer)
		defer smallBufs.Put(bp)
		bp.Reset()
		if err := decryptStream(io.MultiWriter(w, bp), f, key); err != nil {
			return fmt.Errorf("%s/%s: %w", prefix, name, err)
		}
		return out.WriteFile(prefix+"/"+name, int64(bp.Len()), bp)
	}
	size := plaintextSize(f, key)
	r := &cryptReader{run: func(dst io.Writer) error { return decryptStream(io.MultiWriter(w, dst), f, key) }}
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
	h, err := hashTrain(cfg.Creator.ID, cfg.FileList, sid, train, func(name string, w io.Writer) error {
		return decryptTo(train, name, "pht_train", key, w, out)
	})
	if err != nil {
		return integrity(err, errTrainIntegrity)
	}
	if hex.EncodeToString(h) != strings.ToLower(cfg.Hash) {
		return errTrainIntegrity // the same error as bad padding: no oracle
	}
	return nil
}

// decryptResults decrypts every result file in walk order and checks
// result_hash.
func decryptResults(cfg *Config, results fs.FS, key []byte, out Sink) error {
	sid, _ := hex.DecodeString(cfg.SessionID)
	rh, err := hashResults(results, func(name string, w io.Writer) error {
		return decryptTo(results, name, "pht_results", key, w, out)
	})
	if err != nil {
		return integrity(err, errResultsIntegrity)
	}
	got := hex.EncodeToString(rh.sum(sid))
	if cfg.ResultHash == nil || got != strings.ToLower(*cfg.ResultHash) {
		return errResultsIntegrity // the same error as bad padding: no oracle
	}
	return nil
}

// PreRunCheck runs SPEC pre-run steps 1–6 for station st: key check, key
// unwrap, decryption and immutable hash of the train files, signatures, and
// (after the first station) the previous results, result signature and
// chain. Plaintext goes to out (nil: verify only); on error, discard out.
func PreRunCheck(cfg *Config, train, results fs.FS, st Station, out Sink) error {
	r, err := preRunCheckTrain(cfg, train, st, out)
	if err != nil {
		return err
	}
	if !r.First {
		return decryptResults(cfg, results, r.SymKey, out)
	}
	return nil
}

// preRunCheckTrain is PreRunCheck up to the previous results: the key
// check, key unwrap, decryption and immutable hash of the train files and
// the config's signatures. Unless the result says First, the caller must
// also check the previous results (decryptResults) and act on its error
// before it writes anything (PostRun runs it next to encrypting the new
// results).
func preRunCheckTrain(cfg *Config, train fs.FS, st Station, out Sink) (*preRunResult, error) {
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
	key, err := unwrapKey(st.Key, wrapped)
	if err != nil {
		return nil, fmt.Errorf("route[%d].encrypted_key (station %s): %w", pos, st.ID, err)
	}
	if err := decryptTrain(cfg, train, key, out); err != nil {
		return nil, err
	}
	return &preRunResult{Index: pos, First: len(status.Done) == 0, SymKey: key}, nil
}
