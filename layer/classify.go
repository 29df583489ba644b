package layer

import (
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Classify reads the layers of img at indexes (from the bottom, 0-based)
// and tells what each touches, as Resolve's LayerInfo does for the layers
// it reads: whether it changes a path outside the prefixes (an entry, a
// whiteout, an opaque marker; directory entries of the prefixes' ancestors
// excepted) and the first 20 such entry names. It keeps no content: a
// regular file under the prefixes is hashed as Resolve hashes a file it
// does not keep, and the bytes go. Every layer read is checked against its
// diff ID, and lim applies (zero fields: the defaults), the decompression
// ratio included; a layer whose summary is in cache (nil: none) is not
// read again, and one read is summarised there as Resolve does. The layers are read top-down, each once, and what an upper
// one hides counts for the lower ones, as in Resolve. The result is in the
// order of indexes.
func Classify(img v1.Image, prefixes []string, indexes []int, lim Limits, cache SummaryCache) ([]LayerInfo, error) {
	// Nothing is kept: no spool directory, no memory limit.
	o := options{limits: lim.withDefaults(), cache: cache}
	r, layers, diffIDs, err := start(img, prefixes)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	order := slices.Clone(indexes)
	slices.Sort(order)
	order = slices.Compact(order)
	infos := map[int]LayerInfo{}
	st := newHides()
	for k := len(order) - 1; k >= 0; k-- {
		i := order[k]
		if i < 0 || i >= len(layers) {
			return nil, fmt.Errorf("layer %d: no such layer, the image has %d", i, len(layers))
		}
		var want v1.Hash
		if diffIDs != nil {
			want = diffIDs[i]
		} else if want, err = layers[i].DiffID(); err != nil {
			return nil, fmt.Errorf("layer %d: reading diff ID: %w", i, classify(err))
		}
		lr := layerReader{r: r, o: &o, index: i, upper: st, pending: newHides()}
		used, err := lr.fromCache(layers[i], want)
		if err == nil && !used {
			lr = layerReader{r: r, o: &o, index: i, upper: st, pending: newHides()}
			err = lr.read(layers[i], want)
		}
		if err != nil {
			lr.discard()
			return nil, err
		}
		st = st.union(lr.pending)
		infos[i] = lr.info
	}
	out := make([]LayerInfo, len(indexes))
	for k, i := range indexes {
		out[k] = infos[i]
	}
	return out, nil
}
