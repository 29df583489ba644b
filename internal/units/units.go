// Package units writes byte counts for people: the progress bars, error
// messages and inspect's tables use one form.
package units

import "fmt"

// Bytes writes n as B, KiB, MiB, GiB or TiB with one decimal.
func Bytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, units := float64(n)/1024, []string{"KiB", "MiB", "GiB", "TiB"}
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
