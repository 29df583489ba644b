package protocol

import (
	"bytes"
	"io"
	"testing"
)

func FuzzParseConfig(f *testing.F) {
	for _, n := range []string{"initial_train_config.json", "after_station_1_train_config.json", "after_station_2_train_config.json"} {
		f.Add(read(f, "config/"+n))
	}
	f.Add([]byte(`{"source":{},"creator":{},"build":{},"route":[{"index":1,"eco_system":"tue"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		enc, err := c.Encode()
		if err != nil {
			return
		}
		// What we write, we read back to the same bytes.
		c2, err := ParseConfig(enc)
		if err != nil {
			t.Fatalf("re-parse of our own encoding: %v", err)
		}
		enc2, _ := c2.Encode()
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding is not stable")
		}
		Verify(c)
		for i := range c.Route {
			writeBackSize(c, i) // post-run's write-back check never panics
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	key := bytes.Repeat([]byte{1}, 32)
	var w bytes.Buffer
	encryptStream(&w, bytes.NewReader([]byte("hello")), key)
	f.Add(w.Bytes())
	f.Add([]byte{})
	f.Add(make([]byte, 16))
	f.Add(make([]byte, 33))
	f.Fuzz(func(t *testing.T, b []byte) {
		decryptStream(io.Discard, bytes.NewReader(b), key)
		// Round trip: our encryption of b decrypts to b.
		var enc, dec bytes.Buffer
		if err := encryptStream(&enc, bytes.NewReader(b), key); err != nil {
			t.Fatal(err)
		}
		if int64(enc.Len()) != EncryptedSize(int64(len(b))) {
			t.Fatalf("EncryptedSize(%d) = %d, got %d", len(b), EncryptedSize(int64(len(b))), enc.Len())
		}
		if err := decryptStream(&dec, &enc, key); err != nil || !bytes.Equal(dec.Bytes(), b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
