package train

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
)

// Limit names one limit SetLimit can change.
type Limit struct{ Name, Default, What string }

// LimitNames are the limits SetLimit takes, with their defaults.
var LimitNames = []Limit{
	{"manifest-size", "4MiB", "manifest or index"},
	{"config-size", "4MiB", "image config blob"},
	{"layers", strconv.Itoa(oci.DefaultMaxLayers), "layers per image"},
	{"entries", strconv.FormatInt(layer.DefaultMaxEntries, 10), "tar entries per layer"},
	{"file-size", "64GiB", "train file (config, train file, result)"},
	{"train-config-size", "1MiB", "/opt/train_config.json"},
	{"ratio", strconv.FormatInt(layer.DefaultMaxRatio, 10), "bytes decompressed per compressed byte, layers whose content is not needed"},
}

// SetLimit raises (or lowers) one limit by name (see LimitNames); sizes
// take an optional KiB, MiB, GiB or TiB suffix.
func (e *Env) SetLimit(name, value string) error {
	if !slices.ContainsFunc(LimitNames, func(l Limit) bool { return l.Name == name }) {
		names := make([]string, len(LimitNames))
		for i, l := range LimitNames {
			names[i] = l.Name
		}
		return fmt.Errorf("limit %q: want one of %s%.0w", name, strings.Join(names, ", "), ErrUsage)
	}
	n, err := parseSize(value)
	if err != nil || n <= 0 {
		return fmt.Errorf("limit %s=%q: want a positive number, sizes with an optional KiB, MiB, GiB or TiB suffix%.0w", name, value, ErrUsage)
	}
	switch name {
	case "manifest-size":
		e.OCI.Limits.MaxManifestSize = n
	case "config-size":
		e.OCI.Limits.MaxConfigSize = n
	case "layers":
		e.OCI.Limits.MaxLayers = int(min(n, 1<<31-1))
	case "entries":
		e.Limits.MaxEntries = n
	case "file-size":
		e.Limits.MaxFileSize = n
	case "train-config-size":
		e.MaxConfigSize = n
	case "ratio":
		e.Limits.MaxRatio = n
	}
	return nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for i, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if rest, ok := strings.CutSuffix(s, u); ok {
			s, mult = rest, int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("%s: too large", s)
	}
	return n * mult, nil
}
