package protocol

import (
	"crypto"
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/phtoci/phtoci/internal/cbc"
)

// symKeySize is the symmetric key length (AES-256).
const symKeySize = 32

const chunk = 256 << 10 // stream buffer; a multiple of the AES block size

// bufs recycles stream buffers: a train can hold a hundred thousand small
// result files, and a fresh buffer per file would churn the heap.
var bufs = sync.Pool{New: func() any { b := make([]byte, chunk+aes.BlockSize); return &b }}

// newSymmetricKey draws a fresh 32-byte key.
func newSymmetricKey() ([]byte, error) {
	k := make([]byte, symKeySize)
	_, err := io.ReadFull(rand.Reader, k)
	return k, err
}

// EncryptedSize is the stored size of an n-byte plaintext: IV + PKCS#7
// padded CBC ciphertext (vectors §2).
func EncryptedSize(n int64) int64 { return aes.BlockSize + (n/aes.BlockSize+1)*aes.BlockSize }

// encryptStream writes IV || AES-256-CBC(PKCS#7(src)) to dst with a fresh
// random IV. Memory does not depend on the input size.
func encryptStream(dst io.Writer, src io.Reader, key []byte) error {
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rand.Reader, iv); err != nil {
		return err
	}
	return encryptWithIV(dst, src, key, iv)
}

func encryptWithIV(dst io.Writer, src io.Reader, key, iv []byte) error {
	// AES-NI with the round keys in registers where it runs
	// (internal/cbc), else crypto/cipher's encrypter.
	mode, err := cbc.NewEncrypter(key, iv)
	if err != nil {
		return fmt.Errorf("symmetric key: %w", err)
	}
	if _, err := dst.Write(iv); err != nil {
		return err
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	for {
		n, err := io.ReadFull(src, buf[:chunk])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			// Last chunk: pad to a whole block (a full extra block when aligned).
			pad := aes.BlockSize - n%aes.BlockSize
			for i := 0; i < pad; i++ {
				buf[n+i] = byte(pad)
			}
			n += pad
			mode.CryptBlocks(buf[:n], buf[:n])
			_, werr := dst.Write(buf[:n])
			return werr
		}
		if err != nil {
			return err
		}
		mode.CryptBlocks(buf[:n], buf[:n])
		if _, err := dst.Write(buf[:n]); err != nil {
			return err
		}
	}
}

// newEncryptReader returns a reader of IV || ciphertext of src. Copied
// with io.Copy (or WriteTo), it encrypts in the caller's goroutine straight
// into the destination; read with Read, a goroutine produces it through a
// pipe as it is read.
func newEncryptReader(src io.Reader, key []byte) io.ReadCloser {
	return &cryptReader{run: func(dst io.Writer) error { return encryptStream(dst, src, key) }}
}

// cryptReader is the output of one file's encryption or decryption (run)
// as an io.Reader that also implements io.WriterTo. Sinks copy what they
// get with io.Copy, which uses WriteTo: run then writes into the sink in
// the caller's goroutine, with no pipe between them. (Through io.Pipe,
// every 32 KiB that io.Copy reads is a round trip between two goroutines,
// and the goroutine that encrypts waits while the sink copies: on a 2-core
// station that was a tenth of a post-run's time.) Read falls back to
// running run in a goroutine behind a pipe.
//
// Hand-written: io.Pipe is the only producer-to-reader adapter in the
// standard library, and it has no WriterTo.
type cryptReader struct {
	run     func(dst io.Writer) error
	started bool
	pr      *io.PipeReader
	done    chan error
	err     error // run's own failure, not the destination's
}

// WriteTo runs the stream into dst in the caller's goroutine (or, after a
// Read, copies the rest of the pipe).
func (c *cryptReader) WriteTo(dst io.Writer) (int64, error) {
	if c.started {
		return io.Copy(dst, readerOnly{c})
	}
	c.started = true
	cw := &countingWriter{w: dst}
	err := c.run(cw)
	if cw.err != nil {
		return cw.n, cw.err
	}
	c.err = err
	return cw.n, err
}

func (c *cryptReader) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		pr, pw := io.Pipe()
		c.pr, c.done = pr, make(chan error, 1)
		go func() {
			err := c.run(pw)
			pw.CloseWithError(err)
			c.done <- err
		}()
	}
	if c.pr == nil {
		return 0, io.EOF // consumed by WriteTo
	}
	return c.pr.Read(p)
}

// Close stops a goroutine started by Read and waits for it.
func (c *cryptReader) Close() error {
	if c.pr != nil && c.done != nil {
		c.pr.CloseWithError(io.ErrClosedPipe)
		if err := <-c.done; err != nil && err != io.ErrClosedPipe {
			c.err = err
		}
		c.done = nil
	}
	return nil
}

// Err is run's own error (not one of the destination) once the stream was
// copied or closed: for decryption, what is wrong with the ciphertext.
func (c *cryptReader) Err() error { return c.err }

type readerOnly struct{ io.Reader }

// countingWriter counts the bytes written through it and keeps the
// destination's error apart from the producer's.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// decryptStream reads IV || ciphertext from src and writes the plaintext to
// dst in constant memory. A short input, a length that is not a whole number
// of blocks or bad padding is ErrDecryption.
func decryptStream(dst io.Writer, src io.Reader, key []byte) error {
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(src, iv); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: shorter than an IV", ErrDecryption)
		}
		return err
	}
	// AES-NI eight blocks at a time where it runs (internal/cbc), else
	// crypto/cipher's decrypter.
	mode, err := cbc.NewDecrypter(key, iv)
	if err != nil {
		return fmt.Errorf("%w: symmetric key: %v", ErrDecryption, err)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	// held: decrypted bytes not yet written (the last block may be padding).
	held := 0
	total := 0
	for {
		n, err := io.ReadFull(src, buf[held:held+chunk])
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			return err
		}
		total += n
		if n%aes.BlockSize != 0 {
			return fmt.Errorf("%w: ciphertext length %d is not a multiple of %d", ErrDecryption, total, aes.BlockSize)
		}
		mode.CryptBlocks(buf[held:held+n], buf[held:held+n])
		end := held + n
		if last {
			if end == 0 {
				return fmt.Errorf("%w: no ciphertext after the IV", ErrDecryption)
			}
			pad := int(buf[end-1])
			if pad == 0 || pad > aes.BlockSize || pad > end {
				return fmt.Errorf("%w: bad padding", ErrDecryption)
			}
			for _, b := range buf[end-pad : end] {
				if int(b) != pad {
					return fmt.Errorf("%w: bad padding", ErrDecryption)
				}
			}
			_, err := dst.Write(buf[:end-pad])
			return err
		}
		// Keep the last block back until we know whether more follows.
		if _, err := dst.Write(buf[:end-aes.BlockSize]); err != nil {
			return err
		}
		copy(buf, buf[end-aes.BlockSize:end])
		held = aes.BlockSize
	}
}

// plaintextSize returns the length of the plaintext of an encrypted file
// (IV || CBC ciphertext) from its size and its last two blocks, read at
// their offset, so that the plaintext can be streamed into a format that
// wants the length first (a tar header) without spooling it. It returns -1
// when f cannot be read at offsets or is not a well-formed ciphertext;
// decryptStream then reports what is wrong.
func plaintextSize(f fs.File, key []byte) int64 {
	ra, ok := f.(io.ReaderAt)
	if !ok {
		return -1
	}
	fi, err := f.Stat()
	if err != nil {
		return -1
	}
	n := fi.Size()
	if n < 2*aes.BlockSize || n%aes.BlockSize != 0 {
		return -1
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return -1
	}
	var tail [2 * aes.BlockSize]byte // previous block (or the IV), last block
	if _, err := ra.ReadAt(tail[:], n-int64(len(tail))); err != nil {
		return -1
	}
	var last [aes.BlockSize]byte
	blk.Decrypt(last[:], tail[aes.BlockSize:])
	subtle.XORBytes(last[:], last[:], tail[:aes.BlockSize])
	pad := int(last[aes.BlockSize-1])
	if pad == 0 || pad > aes.BlockSize {
		return -1
	}
	for _, b := range last[aes.BlockSize-pad:] {
		if int(b) != pad {
			return -1
		}
	}
	return n - aes.BlockSize - int64(pad)
}

// wrapKey encrypts the symmetric key for pub: RSAES-OAEP, SHA-512, MGF1-SHA-512,
// empty label (vectors §3).
func wrapKey(pub *rsa.PublicKey, key []byte) ([]byte, error) {
	return rsa.EncryptOAEP(sha512.New(), rand.Reader, pub, key, nil)
}

// unwrapKey decrypts a wrapped symmetric key.
func unwrapKey(k *rsa.PrivateKey, wrapped []byte) ([]byte, error) {
	key, err := rsa.DecryptOAEP(sha512.New(), nil, k, wrapped, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: unwrapping the symmetric key: %v", ErrDecryption, err)
	}
	if len(key) != symKeySize {
		return nil, fmt.Errorf("%w: unwrapped key is %d bytes, expected %d", ErrDecryption, len(key), symKeySize)
	}
	return key, nil
}

// signUser signs the immutable hash as the creator: PKCS#1 v1.5 over
// SHA-512(hash) (vectors §5).
func signUser(k *rsa.PrivateKey, immutableHash []byte) ([]byte, error) {
	d := sha512.Sum512(immutableHash)
	return rsa.SignPKCS1v15(nil, k, crypto.SHA512, d[:])
}

// verifyUser checks a user signature.
func verifyUser(pub *rsa.PublicKey, immutableHash, sig []byte) error {
	d := sha512.Sum512(immutableHash)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA512, d[:], sig)
}

// signBuilder signs hash || user signature as the builder (vectors §5).
func signBuilder(k *rsa.PrivateKey, immutableHash, userSig []byte) ([]byte, error) {
	d := sha512.Sum512(append(append([]byte(nil), immutableHash...), userSig...))
	return rsa.SignPKCS1v15(nil, k, crypto.SHA512, d[:])
}

// verifyBuilder checks a builder signature.
func verifyBuilder(pub *rsa.PublicKey, immutableHash, userSig, sig []byte) error {
	d := sha512.Sum512(append(append([]byte(nil), immutableHash...), userSig...))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA512, d[:], sig)
}

// signPSS signs a 64-byte SHA-512 digest directly with RSASSA-PSS, MGF1-SHA-512
// and the maximum salt (vectors §7).
func signPSS(k *rsa.PrivateKey, digest []byte) ([]byte, error) {
	return rsa.SignPSS(rand.Reader, k, crypto.SHA512, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
}

// verifyPSS checks a PSS signature with exactly the maximum salt length, as
// the reference does.
func verifyPSS(pub *rsa.PublicKey, digest, sig []byte) error {
	salt := pub.Size() - sha512.Size - 2
	return rsa.VerifyPSS(pub, crypto.SHA512, digest, sig, &rsa.PSSOptions{SaltLength: salt})
}

// chainDigest computes digest_i (vectors §8): SHA-512(session_id || rh) for the
// first station, SHA-512(d_0 || … || d_{i-1} || rh) after it.
func chainDigest(sessionID []byte, earlier [][]byte, resultHash []byte) []byte {
	h := sha512.New()
	if len(earlier) == 0 {
		h.Write(sessionID)
	}
	for _, d := range earlier {
		h.Write(d)
	}
	h.Write(resultHash)
	return h.Sum(nil)
}
