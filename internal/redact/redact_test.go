package redact

import (
	"strings"
	"testing"
)

// TestRedact: every form of credential in a URL or a connection string is
// masked, and everything else is kept.
func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://phtoci:hunter2@db:5432/phtoci?sslmode=verify-full", "postgres://phtoci:xxxxx@db:5432/phtoci?sslmode=verify-full"},
		{"postgres://phtoci@db/phtoci?sslmode=disable&password=hunter2", "postgres://phtoci@db/phtoci?sslmode=disable&password=xxxxx"},
		{"postgresql://db/p?PassWord=hunter2&sslpassword=hunter2", "postgresql://db/p?PassWord=xxxxx&sslpassword=xxxxx"},
		{"https://robot:hunter2@harbor.example/v2/", "https://robot:xxxxx@harbor.example/v2/"},
		{"https://robot@harbor.example/v2/?token=hunter2", "https://robot@harbor.example/v2/?token=xxxxx"},
		{"harbor.example:443", "harbor.example:443"},
	} {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, in := range []string{
		`verdict store postgres://u:hunter2@db/x?password=hunter2: relation "trains" does not exist`,
		`dial "postgres://u:hunter2@db/x": refused; host=db user=u password=hunter2 dbname=x`,
		`connect host=db password='hunter2 with space' dbname=x`,
		`GET https://ro:b:hunter2@harbor.example/v2/x?sslpassword=hunter2 failed`, // ':' in the password
		`GET https://ro:p@ss@hunter2@harbor.example/v2/ failed`,                   // '@' in the password
	} {
		got := Text(in)
		if strings.Contains(got, "hunter2") || !strings.Contains(got, Mask) {
			t.Errorf("Text(%q) = %q", in, got)
		}
	}
	if got := Text("no secret here: https://harbor.example/v2/ and host=db"); got != "no secret here: https://harbor.example/v2/ and host=db" {
		t.Errorf("text without secrets changed: %q", got)
	}
}
