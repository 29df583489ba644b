// boltcheck.go opens the bbolt store defensively: the file is checked
// before it is served from (both meta pages, its size, every page the
// buckets reach, every record, the verdicts' checksums), panics of the
// bbolt layer become errors (ErrStoreDamaged) and a store found damaged
// answers nothing more.

package webhook

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// ErrStoreDamaged: the bbolt file of the verdict store is damaged. It is
// not served from; move it away and start again (the verdicts are made
// again by verifying again: README, "Recovering the verdict store").
var ErrStoreDamaged = errors.New("verdict store file is damaged")

const damagedHint = "move the file away (keep it for inspection) and start again: the verdicts are re-derived by verifying the trains again"

var (
	bucketVerdictSums = []byte("verdictSums") // verdict key → CRC-32C of key and value
	bucketStoreMeta   = []byte("storeMeta")
	keySumsComplete   = []byte("verdictSums") // every verdict has its sum
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func verdictSum(k, v []byte) []byte {
	h := crc32.New(castagnoli)
	h.Write(k)
	h.Write([]byte{0})
	h.Write(v)
	return h.Sum(nil)
}

// putVerdict writes a verdict record and its checksum.
func putVerdict(tx *bolt.Tx, k, v []byte) error {
	if err := tx.Bucket(bucketVerdicts).Put(k, v); err != nil {
		return err
	}
	return tx.Bucket(bucketVerdictSums).Put(k, verdictSum(k, v))
}

func (s *boltStore) damaged(what string, args ...any) error {
	return fmt.Errorf("verdict store %s: %w: %s; %s", s.path, ErrStoreDamaged, fmt.Sprintf(what, args...), damagedHint)
}

// guard runs f turning a panic of the bbolt layer (or a fault reading
// its memory map) into ErrStoreDamaged; after one, the store answers
// every call with that error (a transaction may have been left open).
func (s *boltStore) guard(f func() error) (err error) {
	if e := s.broken.Load(); e != nil {
		return *e
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = s.damaged("reading it failed (%v)", p)
			s.broken.Store(&err)
		}
	}()
	return f()
}

func (s *boltStore) update(f func(*bolt.Tx) error) error {
	return s.guard(func() error { return s.db.Update(f) })
}

func (s *boltStore) view(f func(*bolt.Tx) error) error {
	return s.guard(func() error { return s.db.View(f) })
}

// checkMetas reads the two meta pages of the bbolt file at path: both
// must be whole (magic, version, checksum), and the file must hold every
// page the newer one counts. A missing or empty file is a new store.
func checkMetas(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return err
	}
	const hdr = 16 // page header: id, flags, count, overflow
	const metaLen = 64
	buf := make([]byte, hdr+metaLen)
	var best struct{ txid, pgid, pageSize uint64 }
	off := int64(0)
	for i := 0; i < 2; i++ {
		if _, err := f.ReadAt(buf, off); err != nil {
			if err == io.EOF {
				return fmt.Errorf("meta page %d: the file ends at %d bytes", i, fi.Size())
			}
			return err
		}
		m := buf[hdr:]
		le := binary.LittleEndian
		if le.Uint32(m[0:]) != 0xED0CDAED || le.Uint32(m[4:]) != 2 {
			return fmt.Errorf("meta page %d: not a bbolt meta page", i)
		}
		h := fnv.New64a()
		h.Write(m[:56])
		if h.Sum64() != le.Uint64(m[56:]) {
			return fmt.Errorf("meta page %d: checksum mismatch", i)
		}
		pageSize := uint64(le.Uint32(m[8:]))
		if pageSize < 1024 || pageSize > 1<<20 {
			return fmt.Errorf("meta page %d: page size %d", i, pageSize)
		}
		if txid := le.Uint64(m[48:]); i == 0 || txid > best.txid {
			best.txid, best.pgid, best.pageSize = txid, le.Uint64(m[40:]), pageSize
		}
		off = int64(pageSize)
	}
	if need := best.pgid * best.pageSize; uint64(fi.Size()) < need {
		return fmt.Errorf("the file has %d bytes, its pages need %d (truncated)", fi.Size(), need)
	}
	return nil
}

// check reads every record of the store before anything is written to
// it: the pages the buckets reach, the JSON of what the server reads
// back, the verdicts' checksums (when the store has them: a store made
// before them gets them from finishSums); then bbolt's own consistency
// check.
func (s *boltStore) check() error {
	var problem error
	err := s.view(func(tx *bolt.Tx) error {
		sums, meta := tx.Bucket(bucketVerdictSums), tx.Bucket(bucketStoreMeta)
		complete := meta != nil && meta.Get(keySumsComplete) != nil
		if !complete && sums != nil && sums.Stats().KeyN > 0 {
			problem = errors.New("verdict checksums without their marker")
			return nil
		}
		if complete && sums == nil {
			problem = errors.New("the verdict checksums are missing")
			return nil
		}
		for _, b := range [][]byte{bucketVerdicts, bucketTags, bucketQueue, bucketTrains, bucketHops} {
			bk := tx.Bucket(b)
			if bk == nil {
				continue
			}
			err := bk.ForEach(func(k, v []byte) error {
				if v == nil || !json.Valid(v) {
					return fmt.Errorf("bucket %s: record %q is not valid JSON", b, k)
				}
				if !complete || string(b) != string(bucketVerdicts) {
					return nil
				}
				if sum := sums.Get(k); sum == nil || string(sum) != string(verdictSum(k, v)) {
					return fmt.Errorf("verdict %q: checksum mismatch", k)
				}
				return nil
			})
			if err != nil {
				problem = err
				return nil
			}
		}
		if complete {
			verdicts := tx.Bucket(bucketVerdicts)
			err := sums.ForEach(func(k, _ []byte) error {
				if verdicts == nil || verdicts.Get(k) == nil {
					return fmt.Errorf("verdict %q: a checksum without its record", k)
				}
				return nil
			})
			if err != nil {
				problem = err
				return nil
			}
		}
		for _, b := range [][]byte{bucketSummaries, bucketSummaryUsed} {
			if bk := tx.Bucket(b); bk != nil {
				bk.ForEach(func(_, _ []byte) error { return nil }) // reach their pages
			}
		}
		for err := range tx.Check() {
			if problem == nil {
				problem = err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if problem != nil {
		return s.damaged("%v", problem)
	}
	return nil
}

// finishSums gives every verdict of a store made before the checksums
// its checksum, once (in the transaction that makes the buckets).
func finishSums(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketStoreMeta)
	if meta.Get(keySumsComplete) != nil {
		return nil
	}
	sums := tx.Bucket(bucketVerdictSums)
	err := tx.Bucket(bucketVerdicts).ForEach(func(k, v []byte) error { return sums.Put(k, verdictSum(k, v)) })
	if err != nil {
		return err
	}
	return meta.Put(keySumsComplete, []byte{1})
}
