package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
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
// authFile that does not exist is an error.
func ContainersKeychain(authFile string) authn.Keychain {
	explicit := authFile != "" || os.Getenv("REGISTRY_AUTH_FILE") != ""
	kc := authn.Keychain(&authFileKeychain{files: authFiles(authFile), explicit: explicit})
	if explicit {
		return kc
	}
	return authn.NewMultiKeychain(kc, authn.DefaultKeychain)
}

type authFileKeychain struct {
	files    []string
	explicit bool
}

func (k *authFileKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
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
			return nil, err
		}
		for _, key := range keys {
			ac, err := cf.GetAuthConfig(key) // consults credHelpers and credsStore
			if err != nil {
				return nil, fmt.Errorf("credentials for %s from %s: %w", key, f, err)
			}
			if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
				continue
			}
			return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password,
				IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}), nil
		}
	}
	return authn.Anonymous, nil
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
