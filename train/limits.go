package train

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// limitNames are the limits SetLimit takes (the README's limits table
// gives their defaults).
var limitNames = []string{"manifest-size", "config-size", "layers", "entries", "file-size", "train-config-size", "ratio", "train-ratio"}

// SetLimit raises (or lowers) one limit by name: manifest-size,
// config-size, layers, entries, file-size, train-config-size, ratio or
// train-ratio (the README's limits table); sizes take an optional KiB, MiB, GiB or TiB
// suffix.
func (e *Env) SetLimit(name, value string) error {
	if !slices.Contains(limitNames, name) {
		return fmt.Errorf("limit %q: want one of %s%.0w", name, strings.Join(limitNames, ", "), ErrUsage)
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
	case "train-ratio":
		e.Limits.MaxTrainRatio = n
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
