package textesc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"station-aachen", "station-aachen"},
		{"", ""},
		{"a b", "a b"},
		{"st\x1b[2K\r\x1b[32mverified", `st\x1b[2K\r\x1b[32mverified`},
		{"line\nnext\ttab", `line\nnext\ttab`},
		{"del\x7f", `del\x7f`},
		{"c1\u009b31m", `c1\u009b31m`},
		{"bidi\u202eevil", `bidi\u202eevil`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"Zürich 東京", "Zürich 東京"},
		{`back\slash`, `back\slash`},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFprintfEscapesArgumentsNotFormat(t *testing.T) {
	var b bytes.Buffer
	err := errors.Join(fs.ErrNotExist)
	Fprintf(&b, "%s %-6s|%v %d\n", []string{"a\x1b", "b"}, "x\ry", err, 7)
	if got, want := b.String(), "[a\\x1b b] x\\ry  |file does not exist 7\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	e := Args(errors.New("e\x1b"))[0].(error)
	if e.Error() != `e\x1b` {
		t.Errorf("escaped error: %q", e.Error())
	}
}

func TestWriterKeepsNewlinesOnly(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	n, err := w.Write([]byte("ok\n\x1b[32mverified\r\n"))
	if err != nil || n != 18 {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if got, want := b.String(), "ok\n\\x1b[32mverified\\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestJSONWriter(t *testing.T) {
	var b bytes.Buffer
	in := "{\"a\": \"x\\u001b\u009b\u202e\x7f\U000E0001 Zürich\"}\n"
	if _, err := NewJSONWriter(&b).Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	want := "{\"a\": \"x\\u001b\\u009b\\u202e\\u007f\\udb40\\udc01 Zürich\"}\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	var v map[string]string
	if err := json.Unmarshal(b.Bytes(), &v); err != nil || v["a"] != "x\x1b\u009b\u202e\x7f\U000E0001 Zürich" {
		t.Errorf("not the same JSON: %v %q", err, v["a"])
	}
}
