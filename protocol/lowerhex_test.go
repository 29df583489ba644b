package protocol

import (
	"errors"
	"strings"
	"testing"
)

// Signatures cover decoded bytes, so an upper-cased hex field verifies as
// the same train while comparing unequal as text: every hex field of a
// config must be lower-case, as the reference writes it.
func TestParseConfigRefusesUpperCaseHex(t *testing.T) {
	raw := string(read(t, "config/after_station_1_train_config.json"))
	c, err := ParseConfig([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	upper := func(field, v string) (string, string) {
		return field, strings.Replace(raw, `"`+v+`"`, `"`+strings.ToUpper(v)+`"`, 1)
	}
	cases := map[string]string{}
	for _, fv := range [][2]string{
		{"session_id", c.SessionID}, {"hash", c.Hash}, {"signature", c.Signature},
		{"build.signature", c.Build.Signature}, {"build.rsa_public_key", c.Build.RSAPublicKey},
		{"creator.rsa_public_key", c.Creator.RSAPublicKey},
		{"route[0].signature.digest", c.Route[0].Signature.Digest},
		{"route[0].signature.signature", c.Route[0].Signature.Signature},
		{"route[0].encrypted_key", *c.Route[0].EncryptedKey},
		{"route[1].rsa_public_key", c.Route[1].RSAPublicKey},
	} {
		f, b := upper(fv[0], fv[1])
		if b == raw {
			t.Fatalf("%s: not found in the vector", f)
		}
		cases[f] = b
	}
	for field, b := range cases {
		_, err := ParseConfig([]byte(b))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), field+": upper-case hex") {
			t.Errorf("%s upper-cased: got %v", field, err)
		}
	}
}
