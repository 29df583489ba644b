// Package redact removes credentials from URLs and from text that may
// hold URLs or libpq keyword/value connection strings, before they reach
// an error, a log line or an answer: the password of userinfo
// (postgres://user:pass@host, https://user:pass@registry), query
// parameters that carry secrets (?password=, ?sslpassword=, ?token=, …)
// and password=… pairs. It is the one place phtoci does this.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces every secret.
const Mask = "xxxxx"

// secretKeys are query parameter and keyword names whose values are
// secrets (compared case-insensitively).
var secretKeys = map[string]bool{
	"password": true, "sslpassword": true, "passwd": true, "pass": true, "pwd": true,
	"token": true, "access_token": true, "secret": true, "client_secret": true,
	"api_key": true, "apikey": true, "key": true, "sslkey": true, "auth": true,
}

// URL returns s with the password of its userinfo and the values of its
// secret query parameters masked. A string that does not parse as a URL
// is handled as text (Text).
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return Text(s)
	}
	return redactURL(u)
}

func redactURL(u *url.URL) string {
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Mask)
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = query(u.RawQuery)
	}
	return u.String()
}

// query masks the secret parameters of a raw query, keeping the order
// and form of the others.
func query(raw string) string {
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if key, err := url.QueryUnescape(k); err == nil && ok && secretKeys[strings.ToLower(key)] {
			parts[i] = k + "=" + Mask
		}
	}
	return strings.Join(parts, "&")
}

var (
	// urlInText finds scheme://… up to white space or a quote.
	urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>` + "`" + `]+`)
	// keyValue finds password=… (and the other secret keys) outside URLs,
	// as in libpq keyword/value strings: up to white space or a quote.
	keyValue = regexp.MustCompile(`(?i)\b(password|sslpassword|passwd|pwd|token|secret)(\s*=\s*)('[^']*'|"[^"]*"|[^\s&"']+)`)
)

// Text masks the credentials of every URL in s and every password=…
// pair outside them.
func Text(s string) string {
	s = urlInText.ReplaceAllStringFunc(s, func(m string) string {
		// A URL whose userinfo holds an unescaped '@' or ':' may not
		// parse: mask everything between the scheme and the last '@'
		// of its authority.
		u, err := url.Parse(m)
		if err == nil {
			return redactURL(u)
		}
		scheme, rest, _ := strings.Cut(m, "://")
		auth, path := rest, ""
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			auth, path = rest[:i], rest[i:]
		}
		if i := strings.LastIndexByte(auth, '@'); i >= 0 {
			auth = Mask + auth[i:]
		}
		if p, q, ok := strings.Cut(path, "?"); ok {
			path = p + "?" + query(q)
		}
		return scheme + "://" + auth + path
	})
	return keyValue.ReplaceAllString(s, "${1}${2}"+Mask)
}
