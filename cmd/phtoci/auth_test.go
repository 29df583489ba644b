package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testreg"
	"github.com/phtoci/phtoci/internal/testutil"
	"github.com/phtoci/phtoci/oci"
)

// authJSON writes a containers-auth.json(5) file for host.
func authJSON(t *testing.T, path, host, user, pass string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}})
	testutil.Must(t, err)
	testutil.Must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	testutil.Must(t, os.WriteFile(path, b, 0o600))
}

// TestCredentialsWherePodmanPutsThem (issue 16 item 10): a real `skopeo
// login` as root without XDG_RUNTIME_DIR (it writes
// /run/containers/0/auth.json) is found by phtoci; --authfile and
// $REGISTRY_AUTH_FILE win over it; ~/.config/containers/auth.json is read.
func TestCredentialsWherePodmanPutsThem(t *testing.T) {
	reg := testreg.Start(t, testreg.Options{Auth: true})
	w := newWorld(t, "st-a")
	built := "oci-archive:" + w.path("train.tar")
	w.build(t, built)
	ref := reg.Host + "/pht/x:latest"
	writeRef(t, openRef(t, built, oci.Options{}), ref, oci.Options{Auth: oci.BasicAuth(reg.Username, reg.Password)})

	// No credentials: the registry refuses, and the error says where
	// phtoci looked (issue 28).
	fails(t, exitIO, nil, []string{"verify", ref, "--quiet"}, "authentication required",
		"(no credentials for "+reg.Host+" in ", "/.config/containers/auth.json (missing), ", "/.docker/config.json)")

	// ~/.config/containers/auth.json.
	home := t.TempDir()
	authJSON(t, filepath.Join(home, ".config", "containers", "auth.json"), reg.Host, reg.Username, reg.Password)
	if r := phtoci(t, "", []string{"HOME=" + home}, "verify", ref, "--quiet"); r.code != 0 {
		t.Fatalf("verify with ~/.config/containers/auth.json: exit %d: %s", r.code, r.stderr)
	}

	// skopeo login as root, no XDG_RUNTIME_DIR.
	login := exec.Command("skopeo", "login", "--tls-verify=false", "--username", reg.Username, "--password-stdin", reg.Host)
	login.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	login.Stdin = strings.NewReader(reg.Password)
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("skopeo login: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		logout := exec.Command("skopeo", "logout", reg.Host)
		logout.Env = login.Env
		logout.Run()
	})
	if !exists("/run/containers/0/auth.json") {
		t.Fatalf("skopeo login as root did not write /run/containers/0/auth.json")
	}
	if r := phtoci(t, "", nil, "verify", ref, "--quiet"); r.code != 0 {
		t.Fatalf("verify after skopeo login: exit %d: %s", r.code, r.stderr)
	}

	// --authfile and $REGISTRY_AUTH_FILE win (a wrong password in them fails).
	bad := filepath.Join(t.TempDir(), "auth.json")
	authJSON(t, bad, reg.Host, reg.Username, "wrong")
	// A wrong password: the error names the user sent and the file it
	// came from, never the password.
	for _, r := range []result{
		fails(t, exitIO, nil, []string{"verify", ref, "--quiet", "--authfile", bad}, "authentication required", "(sent user "+reg.Username+" from "+bad+")"),
		fails(t, exitIO, []string{"REGISTRY_AUTH_FILE=" + bad}, []string{"verify", ref, "--quiet"}, "authentication required", "(sent user "+reg.Username+" from "+bad+")"),
		fails(t, exitIO, nil, []string{"post-run", built, "--results", w.results(t, "st-a"), "-o", ref, "--ledger", "none", "--station", "st-a", "--key", w.key("st-a"), "--quiet", "--authfile", bad},
			"authentication required to push to pht/x", "(sent user "+reg.Username+" from "+bad+")"),
	} {
		if strings.Contains(r.stderr, "wrong") {
			t.Errorf("the error shows the password: %s", r.stderr)
		}
	}
	r := phtoci(t, "wrong\n", nil, "verify", ref, "--quiet", "--username", reg.Username, "--password-stdin")
	if r.code != exitIO || !strings.Contains(r.stderr, "(sent user "+reg.Username+", given directly (no auth file read))") || strings.Contains(r.stderr, "wrong") {
		t.Errorf("verify --username with a wrong password: exit %d: %s", r.code, r.stderr)
	}
	good := filepath.Join(t.TempDir(), "auth.json")
	authJSON(t, good, reg.Host, reg.Username, reg.Password)
	if r := phtoci(t, "", []string{"REGISTRY_AUTH_FILE=" + bad}, "verify", ref, "--quiet", "--authfile", good); r.code != 0 {
		t.Fatalf("verify --authfile over REGISTRY_AUTH_FILE: exit %d: %s", r.code, r.stderr)
	}
	fails(t, exitUsage, nil, []string{"verify", ref, "--quiet", "--authfile", filepath.Join(t.TempDir(), "none.json")}, "--authfile", "none.json")
}

// readOnlyDir mounts an empty read-only tmpfs (the tests run as root, for
// whom permission bits do not stop writes) and unmounts it at the end.
func readOnlyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ro")
	testutil.Must(t, os.Mkdir(dir, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -t tmpfs -o ro: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// TestErrorsNameWhatTheUserGave (issue 16 item 6): an output in a
// directory that cannot be written names the output and the directory,
// never a temporary file; a registry's refusal is one line without Go maps,
// with the CLI's hint to log in.
func TestErrorsNameWhatTheUserGave(t *testing.T) {
	w := newWorld(t, "st-a")
	built := w.path("train.tar")
	w.build(t, built)
	ro := readOnlyDir(t)
	st := w.stationArgs("st-a")
	for _, out := range []string{"oci-archive:" + ro + "/out.tar", ro + "/out.tar", "oci:" + ro + "/layout"} {
		r := fails(t, exitIO, nil, append([]string{"post-run", built, "--results", w.results(t, "st-a"), "-o", out, "--ledger", "none"}, st...),
			"writing", filepath.Base(out), "in directory "+ro, "read-only file system")
		if strings.Contains(r.stderr, ".phtoci-") {
			t.Errorf("error names a temporary file: %s", r.stderr)
		}
	}
	r := fails(t, exitIO, nil, append([]string{"pre-run", built, "-o", w.path("dec.tar"), "--results-dir", ro + "/res", "--ledger", "none"}, st...),
		"results directory "+ro+"/res", "in directory "+ro, "read-only file system")
	if strings.Contains(r.stderr, ".phtoci-") {
		t.Errorf("error names a temporary file: %s", r.stderr)
	}
	r = fails(t, exitIO, nil, []string{"decrypt", built, "--key", w.key("researcher"), "--out", ro + "/final"},
		"output directory "+ro+"/final", "in directory "+ro, "read-only file system")
	if strings.Contains(r.stderr, ".phtoci-") {
		t.Errorf("error names a temporary file: %s", r.stderr)
	}

	reg := testreg.Start(t, testreg.Options{Auth: true})
	ref := reg.Host + "/pht/x:latest"
	r = fails(t, exitIO, nil, []string{"verify", ref, "--quiet"},
		"phtoci: registry "+reg.Host+": authentication required to pull pht/x:latest (no credentials for "+reg.Host+" in ",
		"): log in (see README) or pass --username and --password-stdin")
	r2 := fails(t, exitIO, nil, append([]string{"post-run", built, "--results", w.results(t, "st-a"), "-o", ref, "--ledger", "none"}, st...),
		"registry "+reg.Host+": authentication required to push to pht/x", "--username")
	for _, s := range []string{r.stderr, r2.stderr} {
		if strings.Contains(s, "map[") || strings.Contains(s, "UNAUTHORIZED") {
			t.Errorf("registry error with Go maps or raw codes: %s", s)
		}
	}
}
