package webhook

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/phtoci/phtoci/internal/testutil"
	"gopkg.in/yaml.v3"
)

// TestDeployConfigs: the serve.yaml in the Kubernetes manifest loads with
// LoadServeConfig (every key known, the secret files it names provided as
// the Secret would mount them), selects PostgreSQL from store_file, and
// the Deployment has replicas, a readiness probe on /healthz and the DSN
// from the Secret; the systemd unit runs the config README names.
func TestDeployConfigs(t *testing.T) {
	f := testutil.Must1(os.Open("../deploy/kubernetes/phtoci-serve.yaml"))(t)
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var serveYAML string
	var dep struct {
		Kind string
		Spec struct {
			Replicas int
			Template struct {
				Spec struct {
					Containers []struct {
						Args           []string
						ReadinessProbe struct {
							HTTPGet struct{ Path string } `yaml:"httpGet"`
						} `yaml:"readinessProbe"`
					}
					Volumes []struct {
						Name   string
						Secret *struct {
							SecretName string `yaml:"secretName"`
						}
					}
				}
			}
		}
	}
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		var head struct {
			Kind string
			Data map[string]string
		}
		doc.Decode(&head)
		switch head.Kind {
		case "ConfigMap":
			serveYAML = head.Data["serve.yaml"]
		case "Deployment":
			if err := doc.Decode(&dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := dep.Spec.Template.Spec
	if dep.Spec.Replicas < 2 || len(c.Containers) != 1 || c.Containers[0].ReadinessProbe.HTTPGet.Path != "/healthz" ||
		!strings.Contains(strings.Join(c.Containers[0].Args, " "), "serve --config /etc/phtoci/serve.yaml") {
		t.Fatalf("deployment: %+v", dep)
	}
	secret := false
	for _, v := range c.Volumes {
		secret = secret || (v.Secret != nil && v.Secret.SecretName == "phtoci-serve")
	}
	if !secret {
		t.Error("deployment mounts no Secret")
	}
	// Load the ConfigMap's serve.yaml with the Secret's files in place.
	dir := t.TempDir()
	sec := filepath.Join(dir, "secret")
	os.Mkdir(sec, 0o700)
	for k, v := range map[string]string{"secret": "Bearer w", "read-secret": "Bearer r", "dsn": "postgres://phtoci:pw@db:5432/phtoci?sslmode=verify-full", "trust.json": "{}"} {
		os.WriteFile(filepath.Join(sec, k), []byte(v+"\n"), 0o600)
	}
	// The trust store ConfigMap, and the one line marked REQUIRED filled.
	trustDir := filepath.Join(dir, "trust")
	os.Mkdir(trustDir, 0o700)
	os.WriteFile(filepath.Join(trustDir, "trust.json"), []byte(`{}`), 0o600)
	serveYAML = strings.ReplaceAll(serveYAML, "/etc/phtoci/trust", trustDir)
	serveYAML = regexp.MustCompile(`(?m)^registry: "".*$`).ReplaceAllString(serveYAML, "registry: harbor.example")
	p := filepath.Join(dir, "serve.yaml")
	os.WriteFile(p, []byte(strings.ReplaceAll(serveYAML, "/etc/phtoci/secret", sec)), 0o600)
	cfg, err := LoadServeConfig(p)
	if err != nil {
		t.Fatalf("the manifest's serve.yaml: %v", err)
	}
	if !strings.HasPrefix(cfg.Store, "postgres://") || cfg.Secret != "Bearer w" || cfg.ReadSecret != "Bearer r" {
		t.Errorf("loaded config: store %q secret %q read %q", cfg.Store, cfg.Secret, cfg.ReadSecret)
	}
	unit := testutil.Must1(os.ReadFile("../deploy/phtoci-serve.service"))(t)
	readme := testutil.Must1(os.ReadFile("../README.md"))(t)
	if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/phtoci serve --config /etc/phtoci/serve.yaml")) ||
		!bytes.Contains(readme, []byte("deploy/phtoci-serve.service")) || !bytes.Contains(readme, []byte("deploy/kubernetes/phtoci-serve.yaml")) {
		t.Error("systemd unit or README out of step")
	}
}
