//go:build unix

package testpg

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestStart: a server starts as an unprivileged user, takes a database and
// answers a query.
func TestStart(t *testing.T) {
	s := Start(t)
	dsn := s.NewDB(t)
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var user string
	if err := c.QueryRow(context.Background(), "SELECT current_user").Scan(&user); err != nil || user != "postgres" {
		t.Fatalf("current_user %q, %v", user, err)
	}
}
