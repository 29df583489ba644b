#!/usr/bin/env bash
# make demo: a whole route on the bundled sample train, daemonless.
#   keys → build → (pre-run → run → post-run) × 3 stations → verify → decrypt
# The transport changes on the way (oci-archive → OCI layout → docker-archive)
# to show that every step works on every form. There is no container runtime
# here, so each station's run is simulated: pre-run --results-dir writes the
# previous results into a new directory (what the run mounts as
# /opt/pht_results), a stand-in algorithm reads them and adds its own, and
# post-run --results takes that directory as the new results. Nothing is
# copied between stations.
set -euo pipefail
BIN=$(realpath "${1:-bin/phtoci}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SAMPLE="$ROOT/testdata/sample"
W=$(mktemp -d "${TMPDIR:-/tmp}/phtoci-demo.XXXXXX")
trap 'rm -rf "$W"' EXIT
export SOURCE_DATE_EPOCH=1767225600 # reproducible layer timestamps
export PHTOCI_LEDGER="$W/station-ledger.jsonl" # the stations' ledger, not the user's own
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ phtoci %s\n' "$*" | sed "s#$W/##g"; "$BIN" "$@"; }
cd "$W"

# algorithm DIR STATION COUNT: the stand-in for the train's code. It reads
# what earlier stations left in its results directory (a running total)
# and adds to it: the total, and a file of its own.
algorithm() {
  local dir=$1 st=$2 count=$3 total=0
  if [ -f "$dir/total.txt" ]; then total=$(cat "$dir/total.txt"); fi
  echo $((total + count)) >"$dir/total.txt"
  mkdir -p "$dir/stations"
  printf '{"station": "%s", "resource": "Patient", "count": %d}\n' "$st" "$count" >"$dir/stations/$st.json"
}

step "keys for the researcher, the builder and three stations"
for k in researcher builder station-aachen station-leipzig station-tuebingen; do
  run keys generate "$k" | sed 's/^/  /'
done

step "build the train on the master image (central builder)"
run build "oci-archive:$SAMPLE/master.oci.tar" --files "$SAMPLE/train" --query "$SAMPLE/query.json" \
  --creator-id researcher-1 --user-key researcher.pem --builder-key builder.pem \
  --route station-aachen=station-aachen.pub.pem \
  --route station-leipzig=station-leipzig.pub.pem \
  --route station-tuebingen=station-tuebingen.pub.pem \
  --source-address phtoci.example/sample/master --source-tag latest \
  -o oci-archive:train-0.tar --quiet
run inspect oci-archive:train-0.tar --quiet

in=oci-archive:train-0.tar
i=0
for st in station-aachen station-leipzig station-tuebingen; do
  i=$((i + 1))
  case $i in
    1) out=oci:layout-1:train ;;
    2) out=docker-archive:train-2.tar ;;
    3) out=oci-archive:train-3.tar ;;
  esac
  step "station $i ($st): pre-run (previous results into results-$i/)"
  run pre-run "$in" --station "$st" --key "$st.pem" -o "oci-archive:decrypted-$i.tar" --results-dir "results-$i" --quiet
  find "results-$i" -type f | sort | sed "s#^#  found #"
  step "station $i ($st): run the train (stand-in algorithm on results-$i/ as /opt/pht_results)"
  algorithm "results-$i" "$st" $((40 + i))
  find "results-$i" -type f | sort | sed "s#^#  #"
  step "station $i ($st): post-run"
  run post-run "$in" --results "results-$i" --station "$st" --key "$st.pem" -o "$out" --quiet
  in=$out
done

step "central service: keyless verification of the finished train"
run verify "$in" --quiet

step "researcher: verify everything and decrypt the results"
run decrypt "$in" --key researcher.pem --out final --quiet
find final -type f | sort | while read -r f; do printf '  %s: %s\n' "$f" "$(cat "$f")"; done
# Every station's contribution must have reached the researcher.
for st in station-aachen station-leipzig station-tuebingen; do
  [ -f "final/pht_results/stations/$st.json" ] || { echo "demo: FAILED: $st's results are missing" >&2; exit 1; }
done
[ "$(cat final/pht_results/total.txt)" = $((41 + 42 + 43)) ] || { echo "demo: FAILED: total.txt is not the sum over the three stations" >&2; exit 1; }
run inspect "$in" --quiet | sed -n '/^route:/,/^layers/p'
echo
echo "demo: OK — a three-station route on the sample train, without a Docker daemon"
