package protocol

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/phtoci/phtoci/keys"
)

const vdir = "../testdata/vectors"

type vectorsFile struct {
	Keys map[string]struct {
		PrivatePEMFile     string `json:"private_pem_file"`
		PublicPEMFile      string `json:"public_pem_file"`
		ConfigPublicKeyHex string `json:"config_public_key_hex"`
	} `json:"keys"`
	UserID       string `json:"user_id"`
	SessionIDHex string `json:"session_id_hex"`
	SymKeyHex    string `json:"symmetric_key_hex"`
	IVHex        string `json:"iv_hex"`
	TrainFiles   []struct {
		Name, PlainFile, EncryptedFile string
	} `json:"-"`
	RawTrainFiles []map[string]any `json:"train_files"`
	FileList      []string         `json:"file_list"`
	AESCases      []struct {
		KeyHex       string `json:"key_hex"`
		IVHex        string `json:"iv_hex"`
		PlaintextHex string `json:"plaintext_hex"`
		OutputHex    string `json:"output_hex"`
	} `json:"aes_cbc_cases"`
	ImmutableHashCases []struct {
		Description     string            `json:"description"`
		UserID          string            `json:"user_id"`
		SessionIDHex    string            `json:"session_id_hex"`
		OrderedFileList []string          `json:"ordered_file_list"`
		Files           map[string]string `json:"files"`
		QueryFile       *string           `json:"query_file"`
		ExpectedHex     string            `json:"expected_hex"`
	} `json:"immutable_hash_cases"`
	UserSignature struct {
		MessageHex   string `json:"message_hex"`
		SignatureHex string `json:"signature_hex"`
	} `json:"user_signature"`
	BuilderSignature struct {
		MessageHex   string `json:"message_hex"`
		SignatureHex string `json:"signature_hex"`
	} `json:"builder_signature"`
	EncryptedSymmetricKey struct {
		Recipient     string `json:"recipient"`
		CiphertextHex string `json:"ciphertext_hex"`
		PlaintextHex  string `json:"plaintext_hex"`
	} `json:"encrypted_symmetric_key"`
	WalkOrder struct {
		Files         map[string]string `json:"files"`
		ExpectedOrder []string          `json:"expected_file_order"`
		ExpectedHex   string            `json:"expected_results_hash_hex"`
		WrongHex      string            `json:"hash_if_full_path_sorted_(WRONG)_hex"`
		SessionIDHex  string            `json:"session_id_hex"`
	} `json:"results_walk_order_case"`
	ResultsHashCases []struct {
		Description  string   `json:"description"`
		FilesHex     []string `json:"files_in_order_hex"`
		SessionIDHex string   `json:"session_id_hex"`
		ExpectedHex  string   `json:"expected_hex"`
	} `json:"results_hash_cases"`
	PostRun map[string]postRunVector `json:"post_run"`
}

type postRunVector struct {
	Station             string            `json:"station"`
	PrivateKey          string            `json:"private_key"`
	PreviousResultHash  *string           `json:"previous_result_hash_hex"`
	ResultsFiles        map[string]string `json:"results_files"`
	ResultsOrder        []string          `json:"results_order"`
	ResultHashHex       string            `json:"result_hash_hex"`
	ResultSignatureHex  string            `json:"result_signature_hex"`
	ChainDigestHex      string            `json:"chain_digest_hex"`
	ChainSignatureHex   string            `json:"chain_signature_hex"`
	NewSymKeyHex        string            `json:"new_symmetric_key_hex"`
	ResultsIVHex        string            `json:"results_iv_hex"`
	TrainIVHex          string            `json:"train_iv_hex"`
	EncryptedResults    map[string]string `json:"encrypted_results"`
	EncryptedTrainFiles map[string]string `json:"encrypted_train_files"`
	ConfigAfterFile     string            `json:"config_after_file"`
	UserSymKeyFile      string            `json:"user_sym_key_file"`
}

func loadVectors(t testing.TB) *vectorsFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vdir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectorsFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func read(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vdir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func privKey(t testing.TB, name string) *rsa.PrivateKey {
	t.Helper()
	k, err := keys.LoadPrivateKey(filepath.Join(vdir, "keys", name+".pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mapFS(t testing.TB, files map[string]string) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	for name, rel := range files {
		m[name] = &fstest.MapFile{Data: read(t, rel), Mode: 0o644}
	}
	return m
}

func TestVectorKeys(t *testing.T) {
	v := loadVectors(t)
	for name, k := range v.Keys {
		priv := privKey(t, name)
		got, err := keys.EncodePublicKeyHex(&priv.PublicKey)
		if err != nil || got != k.ConfigPublicKeyHex {
			t.Errorf("%s: config hex of the private key's public half differs from the reference's (%v)", name, err)
		}
		pub, err := keys.LoadPublicKey(filepath.Join(vdir, k.PublicPEMFile))
		if err != nil || !keys.Equal(pub, &priv.PublicKey) {
			t.Errorf("%s: public PEM does not load to the same key: %v", name, err)
		}
		up, err := keys.ParsePublicKeyHex(string(bytes.ToUpper([]byte(k.ConfigPublicKeyHex))))
		if err != nil || !keys.Equal(up, pub) {
			t.Errorf("%s: upper-case hex-of-PEM does not parse: %v", name, err)
		}
	}
}

func TestVectorAES(t *testing.T) {
	v := loadVectors(t)
	for i, c := range v.AESCases {
		var out bytes.Buffer
		if err := encryptWithIV(&out, bytes.NewReader(unhex(t, c.PlaintextHex)), unhex(t, c.KeyHex), unhex(t, c.IVHex)); err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(out.Bytes()) != c.OutputHex {
			t.Errorf("case %d: encryption differs from the reference", i)
		}
		if int64(out.Len()) != EncryptedSize(int64(len(c.PlaintextHex)/2)) {
			t.Errorf("case %d: EncryptedSize(%d) = %d, output is %d", i, len(c.PlaintextHex)/2, EncryptedSize(int64(len(c.PlaintextHex)/2)), out.Len())
		}
		var plain bytes.Buffer
		if err := decryptStream(&plain, bytes.NewReader(unhex(t, c.OutputHex)), unhex(t, c.KeyHex)); err != nil || hex.EncodeToString(plain.Bytes()) != c.PlaintextHex {
			t.Errorf("case %d: decryption: %v", i, err)
		}
	}
	// train/encrypted/* = encryption of train/plain/* with the vectors' key and IV.
	key, iv := unhex(t, v.SymKeyHex), unhex(t, v.IVHex)
	for _, name := range []string{"entrypoint.py", "file_1_test.py", "r_script.r", "query.json"} {
		var out bytes.Buffer
		if err := encryptWithIV(&out, bytes.NewReader(read(t, "train/plain/"+name)), key, iv); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), read(t, "train/encrypted/"+name)) {
			t.Errorf("train/encrypted/%s differs from our encryption", name)
		}
	}
}

func TestVectorimmutableHash(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.ImmutableHashCases {
		files := mapFS(t, c.Files)
		if c.QueryFile != nil {
			files["query.json"] = &fstest.MapFile{Data: read(t, *c.QueryFile)}
		}
		got, err := immutableHash(c.UserID, c.OrderedFileList, unhex(t, c.SessionIDHex), files)
		if err != nil {
			t.Fatalf("%s: %v", c.Description, err)
		}
		if hex.EncodeToString(got) != c.ExpectedHex {
			t.Errorf("%s: hash differs from the reference", c.Description)
		}
	}
}

func TestVectorSignaturesAndWrapping(t *testing.T) {
	v := loadVectors(t)
	user, builder := privKey(t, "user"), privKey(t, "builder")
	hash := unhex(t, v.UserSignature.MessageHex)
	sig, err := signUser(user, hash)
	if err != nil || hex.EncodeToString(sig) != v.UserSignature.SignatureHex {
		t.Errorf("user signature differs from the reference (%v)", err)
	}
	bsig, err := signBuilder(builder, hash, sig)
	if err != nil || hex.EncodeToString(bsig) != v.BuilderSignature.SignatureHex {
		t.Errorf("builder signature differs from the reference (%v)", err)
	}
	if verifyBuilder(&builder.PublicKey, hash, sig, bsig) != nil || verifyUser(&user.PublicKey, hash, sig) != nil {
		t.Error("own signatures do not verify")
	}
	st := privKey(t, v.EncryptedSymmetricKey.Recipient)
	key, err := unwrapKey(st, unhex(t, v.EncryptedSymmetricKey.CiphertextHex))
	if err != nil || hex.EncodeToString(key) != v.EncryptedSymmetricKey.PlaintextHex {
		t.Errorf("OAEP unwrap of the reference's key: %v", err)
	}
	w, err := wrapKey(&st.PublicKey, key)
	if err != nil || len(w) != 256 {
		t.Fatalf("wrap: %v", err)
	}
	if k2, err := unwrapKey(st, w); err != nil || !bytes.Equal(k2, key) {
		t.Errorf("own wrap does not unwrap: %v", err)
	}
	if _, err := unwrapKey(privKey(t, "user"), w); !errors.Is(err, ErrDecryption) {
		t.Errorf("unwrap with another key: %v, want ErrDecryption", err)
	}
}

func TestVectorResultsHash(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.ResultsHashCases {
		m := fstest.MapFS{}
		for i, f := range c.FilesHex {
			m[string(rune('a'+i))+".bin"] = &fstest.MapFile{Data: unhex(t, f)}
		}
		got, err := resultHash(m, unhex(t, c.SessionIDHex))
		if err != nil || hex.EncodeToString(got) != c.ExpectedHex {
			t.Errorf("%s: results hash differs (%v)", c.Description, err)
		}
	}
	w := v.WalkOrder
	fsys := mapFS(t, w.Files)
	var order []string
	WalkFiles(fsys, func(name string, _ int64) error { order = append(order, name); return nil })
	if len(order) != len(w.ExpectedOrder) {
		t.Fatalf("walk order %v, want %v", order, w.ExpectedOrder)
	}
	for i := range order {
		if order[i] != w.ExpectedOrder[i] {
			t.Fatalf("walk order %v, want %v", order, w.ExpectedOrder)
		}
	}
	got, err := resultHash(fsys, unhex(t, w.SessionIDHex))
	if err != nil || hex.EncodeToString(got) != w.ExpectedHex || hex.EncodeToString(got) == w.WrongHex {
		t.Errorf("walk-order results hash differs from the reference (%v)", err)
	}
	// The same tree on disk (os.DirFS) walks the same way.
	dir := filepath.Join(vdir, "results", "walk_order")
	got, err = resultHash(os.DirFS(dir), unhex(t, w.SessionIDHex))
	if err != nil || hex.EncodeToString(got) != w.ExpectedHex {
		t.Errorf("walk-order results hash over the directory differs (%v)", err)
	}
}

func TestVectorConfigBytes(t *testing.T) {
	for _, name := range []string{"initial_train_config.json", "after_station_1_train_config.json", "after_station_2_train_config.json"} {
		raw := read(t, "config/"+name)
		c, err := ParseConfig(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		enc, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, raw) {
			t.Errorf("%s: re-encoding differs from the reference's bytes", name)
		}
		// Any layout is read: compact JSON gives the same config.
		var generic any
		json.Unmarshal(raw, &generic)
		compact, _ := json.Marshal(generic)
		c2, err := ParseConfig(compact)
		if err != nil {
			t.Fatalf("%s compact: %v", name, err)
		}
		if enc2, _ := c2.Encode(); !bytes.Equal(enc2, raw) {
			t.Errorf("%s: compact layout re-encodes differently", name)
		}
		if _, err := Verify(c); err != nil {
			t.Errorf("%s: keyless verification of the reference config: %v", name, err)
		}
	}
}

// TestVectorPostRun checks the reference's post-run outputs of both
// stations: hashes and digests exactly, PSS signatures by verification, and
// the encrypted files and user key file by decryption.
func TestVectorPostRun(t *testing.T) {
	v := loadVectors(t)
	user := privKey(t, "user")
	for _, name := range []string{"station_1", "station_2"} {
		p := v.PostRun[name]
		cfg, err := ParseConfig(read(t, p.ConfigAfterFile))
		if err != nil {
			t.Fatal(err)
		}
		sid := unhex(t, v.SessionIDHex)
		results := mapFS(t, p.ResultsFiles)
		rh, err := resultHash(results, sid)
		if err != nil || hex.EncodeToString(rh) != p.ResultHashHex || *cfg.ResultHash != p.ResultHashHex {
			t.Errorf("%s: result hash differs (%v)", name, err)
		}
		st := privKey(t, name)
		if err := verifyPSS(&st.PublicKey, rh, unhex(t, p.ResultSignatureHex)); err != nil {
			t.Errorf("%s: reference result signature does not verify: %v", name, err)
		}
		var earlier [][]byte
		pos, _ := cfg.StationIndex(name)
		for _, r := range cfg.sortedRoute()[:pos] {
			earlier = append(earlier, unhex(t, r.Signature.Digest))
		}
		d := chainDigest(sid, earlier, rh)
		if hex.EncodeToString(d) != p.ChainDigestHex {
			t.Errorf("%s: chain digest differs", name)
		}
		if err := verifyPSS(&st.PublicKey, d, unhex(t, p.ChainSignatureHex)); err != nil {
			t.Errorf("%s: chain signature: %v", name, err)
		}
		// Our PSS signatures verify with the reference's exact salt rule.
		ours, _ := signPSS(st, d)
		if err := verifyPSS(&st.PublicKey, d, ours); err != nil {
			t.Errorf("own PSS: %v", err)
		}
		key := unhex(t, p.NewSymKeyHex)
		ukf := read(t, p.UserSymKeyFile)
		if k, err := unwrapKey(user, ukf); err != nil || !bytes.Equal(k, key) {
			t.Errorf("%s: user_sym_key.key does not unwrap to the new key: %v", name, err)
		}
		for i, r := range cfg.Route {
			k, err := unwrapKey(privKey(t, r.Station), unhex(t, *r.EncryptedKey))
			if err != nil || !bytes.Equal(k, key) {
				t.Errorf("%s: route[%d].encrypted_key: %v", name, i, err)
			}
		}
		for n, rel := range p.EncryptedResults {
			var out bytes.Buffer
			if err := decryptStream(&out, bytes.NewReader(read(t, rel)), key); err != nil || !bytes.Equal(out.Bytes(), read(t, p.ResultsFiles[n])) {
				t.Errorf("%s: %s does not decrypt to the plaintext: %v", name, n, err)
			}
		}
		for n, rel := range p.EncryptedTrainFiles {
			var out bytes.Buffer
			if err := decryptStream(&out, bytes.NewReader(read(t, rel)), key); err != nil || !bytes.Equal(out.Bytes(), read(t, "train/plain/"+n)) {
				t.Errorf("%s: train file %s: %v", name, n, err)
			}
		}
		// The whole researcher path on the reference's state.
		enc := fstest.MapFS{}
		for n, rel := range p.EncryptedResults {
			enc[n] = &fstest.MapFile{Data: read(t, rel)}
		}
		tr := fstest.MapFS{}
		for n, rel := range p.EncryptedTrainFiles {
			tr[n] = &fstest.MapFile{Data: read(t, rel)}
		}
		out := memSink{}
		if err := Decrypt(cfg, user, ukf, tr, enc, out, true); err != nil {
			t.Errorf("%s: Decrypt: %v", name, err)
		}
		if !bytes.Equal(out["pht_results/sub/data.bin"], read(t, p.ResultsFiles["sub/data.bin"])) {
			t.Errorf("%s: researcher's sub/data.bin differs", name)
		}
	}
}

// memSink keeps files in memory.
type memSink map[string][]byte

func (m memSink) WriteFile(name string, size int64, r io.Reader) error {
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		return err
	}
	if size >= 0 && int64(b.Len()) != size {
		return errors.New(name + ": size mismatch")
	}
	m[name] = b.Bytes()
	return nil
}

// asFS turns the files under prefix of a memSink into an fs.FS.
func (m memSink) asFS(prefix string) fs.FS {
	f := fstest.MapFS{}
	for n, b := range m {
		if len(n) > len(prefix)+1 && n[:len(prefix)+1] == prefix+"/" {
			f[n[len(prefix)+1:]] = &fstest.MapFile{Data: b}
		}
	}
	return f
}
