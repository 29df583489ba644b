// Package textesc makes strings that came from an image, a train config or
// a registry safe to print for people: control characters (C0, DEL, C1),
// Unicode format characters (bidirectional overrides, zero-width joiners)
// and invalid UTF-8 are written as Go escapes (\x1b, \r, \u202e), so that
// a station id or @id cannot move the cursor, recolour or overwrite a line
// on the operator's terminal. The CLI's human output and its error and
// warning lines go through it; --json output is encoded by encoding/json,
// and serve's logs by log/slog, which escape by themselves.
package textesc

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// String returns s with every character that is not printable (as
// unicode.IsPrint says, the ASCII space kept) written as a Go escape; a
// string without such characters comes back unchanged.
func String(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e', '\n'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// Strings returns ss with String applied to each.
func Strings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = String(s)
	}
	return out
}

// Fprintf is fmt.Fprintf with every string-like argument (string,
// []string, error, fmt.Stringer) escaped by String; the format itself is
// the caller's and may hold newlines.
func Fprintf(w io.Writer, format string, a ...any) (int, error) {
	return fmt.Fprintf(w, format, Args(a...)...)
}

// Sprintf is fmt.Sprintf with the arguments escaped as Fprintf does.
func Sprintf(format string, a ...any) string {
	return fmt.Sprintf(format, Args(a...)...)
}

// Fprintln writes String of each argument's %v form, separated by spaces,
// and a newline.
func Fprintln(w io.Writer, a ...any) (int, error) {
	return fmt.Fprintln(w, Args(a...)...)
}

// Args returns a with its string-like values escaped (see Fprintf); other
// values (numbers, booleans) are kept as they are.
func Args(a ...any) []any {
	out := make([]any, len(a))
	for i, v := range a {
		switch v := v.(type) {
		case string:
			out[i] = String(v)
		case []string:
			out[i] = Strings(v)
		case error:
			out[i] = escapedError{v}
		case fmt.Stringer:
			out[i] = String(v.String())
		default:
			out[i] = v
		}
	}
	return out
}

// escapedError prints as its error's escaped text and still unwraps to it.
type escapedError struct{ err error }

func (e escapedError) Error() string { return String(e.err.Error()) }
func (e escapedError) Unwrap() error { return e.err }

// NewWriter returns a writer that writes to w what it is given with every
// character String would escape escaped, except newlines: the human output
// of a command, whose lines are its own but whose values may not be. Each
// Write is escaped on its own (fmt's functions write once per call).
func NewWriter(w io.Writer) io.Writer { return &writer{w} }

type writer struct{ w io.Writer }

func (e *writer) Write(p []byte) (int, error) {
	lines := strings.Split(string(p), "\n")
	for i, l := range lines {
		lines[i] = String(l)
	}
	if _, err := io.WriteString(e.w, strings.Join(lines, "\n")); err != nil {
		return 0, err
	}
	return len(p), nil
}

// NewJSONWriter returns a writer for JSON text (as encoding/json writes
// it) that writes the characters String would escape as \u escapes:
// encoding/json escapes C0 controls but writes DEL, C1 controls and format
// characters raw, which a `jq -r` then prints to a terminal. JSON has such
// characters only inside strings, where \u escapes mean the same.
func NewJSONWriter(w io.Writer) io.Writer { return &jsonWriter{w} }

type jsonWriter struct{ w io.Writer }

func (e *jsonWriter) Write(p []byte) (int, error) {
	s := string(p)
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			b.WriteString(`\ufffd`)
		case r < 0x80 && r != 0x7f || unicode.IsPrint(r):
			b.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	if _, err := io.WriteString(e.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}
