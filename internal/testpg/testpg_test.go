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

// TestStopRestart: a stopped server refuses connections; restarted, it
// answers on the same port with the data it had.
func TestStopRestart(t *testing.T) {
	s := Start(t)
	dsn := s.NewDB(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	s.Stop()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	c, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT n FROM kept").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after the restart: %d %v", n, err)
	}
}
