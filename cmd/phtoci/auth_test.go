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
	"github.com/phtoci/phtoci/oci"
)

// authJSON writes a containers-auth.json(5) file for host.
func authJSON(t *testing.T, path, host, user, pass string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}})
	must(t, err)
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	must(t, os.WriteFile(path, b, 0o600))
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

	// No credentials: the registry refuses.
	fails(t, exitIO, nil, []string{"verify", ref, "--quiet"}, "authentication required")

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
	fails(t, exitIO, nil, []string{"verify", ref, "--quiet", "--authfile", bad}, "authentication required")
	fails(t, exitIO, []string{"REGISTRY_AUTH_FILE=" + bad}, []string{"verify", ref, "--quiet"}, "authentication required")
	good := filepath.Join(t.TempDir(), "auth.json")
	authJSON(t, good, reg.Host, reg.Username, reg.Password)
	if r := phtoci(t, "", []string{"REGISTRY_AUTH_FILE=" + bad}, "verify", ref, "--quiet", "--authfile", good); r.code != 0 {
		t.Fatalf("verify --authfile over REGISTRY_AUTH_FILE: exit %d: %s", r.code, r.stderr)
	}
	fails(t, exitUsage, nil, []string{"verify", ref, "--quiet", "--authfile", filepath.Join(t.TempDir(), "none.json")}, "--authfile", "none.json")
}
