package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// authFiles are the credential files podman, skopeo and buildah use, in
// the order containers-auth.json(5) reads them: authFile (--authfile) or
// else $REGISTRY_AUTH_FILE alone when set; otherwise
// $XDG_RUNTIME_DIR/containers/auth.json (as root without XDG_RUNTIME_DIR:
// /run/containers/0/auth.json, where a root skopeo login writes),
// ~/.config/containers/auth.json, then Docker's config (DOCKER_CONFIG or
// ~/.docker/config.json, with its credential helpers).
func authFiles(authFile string) []string {
	if authFile == "" {
		authFile = os.Getenv("REGISTRY_AUTH_FILE")
	}
	if authFile != "" {
		return []string{authFile}
	}
	var files []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		files = append(files, filepath.Join(d, "containers", "auth.json"))
	} else if runtime.GOOS == "linux" {
		files = append(files, fmt.Sprintf("/run/containers/%d/auth.json", os.Getuid()))
	}
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".config", "containers", "auth.json"))
	}
	return files
}

// ContainersKeychain finds credentials in authFiles(authFile), the first
// file with an entry for the repository or its registry winning (entries
// may name a registry, a namespace or a repository, the longest match
// wins); without an authFile or $REGISTRY_AUTH_FILE it then falls back to
// authn.DefaultKeychain (Docker's config and credential helpers). A given
// authFile that does not exist is an error. An authentication error of
// this package says which credentials it sent and from which file, or
// where it looked.
func ContainersKeychain(authFile string) authn.Keychain {
	explicit := authFile != "" || os.Getenv("REGISTRY_AUTH_FILE") != ""
	return &containersKeychain{files: authFileKeychain{files: authFiles(authFile), explicit: explicit}, docker: !explicit}
}

// containersKeychain is the auth files, then (docker) Docker's config.
type containersKeychain struct {
	files  authFileKeychain
	docker bool
}

func (k *containersKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	a, _, err := k.files.lookup(r)
	if err != nil || a != authn.Anonymous || !k.docker {
		return a, err
	}
	return authn.DefaultKeychain.Resolve(r)
}

// describe says which credentials Resolve finds for r and where, or where
// it looked: "sent user alice from /run/containers/0/auth.json".
func (k *containersKeychain) describe(r authn.Resource) string {
	var looked []string
	for _, f := range k.files.files {
		_, err := os.Stat(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			looked = append(looked, f+" (missing)")
			continue
		case err != nil:
			looked = append(looked, f+" (unreadable)")
			continue
		}
		one := authFileKeychain{files: []string{f}, explicit: true}
		a, _, err := one.lookup(r)
		if err != nil {
			looked = append(looked, f+" (unreadable)")
			continue
		}
		if a != authn.Anonymous {
			return "sent " + who(a) + " from " + f
		}
		looked = append(looked, f)
	}
	if k.docker {
		p := filepath.Join(config.Dir(), config.ConfigFileName)
		if a, err := authn.DefaultKeychain.Resolve(r); err == nil && a != authn.Anonymous {
			return "sent " + who(a) + " from " + p + " (Docker's config or its credential helper)"
		}
		looked = append(looked, p)
	}
	return "no credentials for " + r.RegistryStr() + " in " + strings.Join(looked, ", ")
}

// who names the identity a sends, never its secret.
func who(a authn.Authenticator) string {
	c, err := a.Authorization()
	switch {
	case err != nil:
		return "credentials"
	case c.Username != "":
		return "user " + c.Username
	case c.IdentityToken != "" || c.RegistryToken != "":
		return "a token"
	}
	return "no credentials"
}

// describeCredentials says which credentials opts sends to repo's
// registry and where they came from, or where none were found.
func describeCredentials(opts Options, repo name.Repository) string {
	if opts.Auth != nil {
		return "sent " + who(opts.Auth) + ", given directly (no auth file read)"
	}
	kc := keychain(opts)
	if ck, ok := kc.(*containersKeychain); ok {
		return ck.describe(repo)
	}
	if a, err := kc.Resolve(repo); err == nil && a != authn.Anonymous {
		return "sent " + who(a) + " from the keychain given"
	}
	return "no credentials for " + repo.RegistryStr() + " in the keychain given"
}

type authFileKeychain struct {
	files    []string
	explicit bool
}

func (k *authFileKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	a, _, err := k.lookup(r)
	return a, err
}

// lookup returns the credentials for r and the file they came from
// (authn.Anonymous and "" when none).
func (k *authFileKeychain) lookup(r authn.Resource) (authn.Authenticator, string, error) {
	keys := []string{r.String()}
	for p := r.String(); strings.Contains(p, "/"); {
		p = p[:strings.LastIndex(p, "/")]
		keys = append(keys, p)
	}
	if keys[len(keys)-1] != r.RegistryStr() {
		keys = append(keys, r.RegistryStr())
	}
	for _, f := range k.files {
		cf, err := loadAuthFile(f)
		if errors.Is(err, fs.ErrNotExist) && !k.explicit {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		for _, key := range keys {
			ac, err := cf.GetAuthConfig(key) // consults credHelpers and credsStore
			if err != nil {
				return nil, "", fmt.Errorf("credentials for %s from %s: %w", key, f, err)
			}
			if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
				continue
			}
			return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password,
				IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}), f, nil
		}
	}
	return authn.Anonymous, "", nil
}

func loadAuthFile(p string) (*configfile.ConfigFile, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("registry credentials file: %w", err)
	}
	defer f.Close()
	cf := configfile.New(p)
	if err := cf.LoadFromReader(f); err != nil {
		return nil, fmt.Errorf("registry credentials file %s: %w", p, err)
	}
	return cf, nil
}
