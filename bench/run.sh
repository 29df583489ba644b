#!/usr/bin/env bash
# make bench: phtoci's post-run and pre-run against the hardware's limits.
# For results of 100 MiB and 1 GiB (incompressible, compressible, mixed) and
# 100,000 small files it runs the binary on oci-archive files and through a
# local registry, and prints MB/s, peak RSS and the ratio to the single-core
# SHA-512 throughput measured in the same run. Side by side: `crane append`
# of an equally sized layer and `skopeo copy` of the train. Writes
# bench/results.md. Needs docker-registry, skopeo (make test-deps) and
# installs crane with `go install` when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SIZES=${BENCH_SIZES:-"100 1024"}          # MiB
REPEAT=${BENCH_REPEAT:-5}                 # runs per case; the table shows the median wall time, the peak RSS
WARMUP=${BENCH_WARMUP:-1}                 # untimed runs before them (first touches of memory are slow on VMs)
SMALL=${BENCH_SMALL_FILES:-100000}
W=${BENCH_DIR:-$(mktemp -d /var/tmp/phtoci-bench.XXXXXX)}
OUT="$ROOT/bench/results.md"
mkdir -p "$W/bin"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT

./scripts/test-deps.sh /usr/bin/time:time curl:curl python3:python3
export PATH="$PATH:$(go env GOPATH)/bin"
command -v crane >/dev/null || go install github.com/google/go-containerregistry/cmd/crane@v0.22.1
CGO_ENABLED=0 go build -trimpath -o "$W/bin/phtoci" ./cmd/phtoci
go build -o "$W/bin/sha512speed" ./bench/sha512speed
go build -o "$W/bin/countproxy" ./bench/countproxy
P="$W/bin/phtoci"
# The same train is post-run and pre-run again on every repeat: no station
# ledger (it would refuse the repeats as replays).
export PHTOCI_LEDGER=none

SHA=$("$W/bin/sha512speed")
echo "single-core SHA-512: $SHA MB/s"
# The two-core bound of each step from its primitives' single-core speeds:
# post-run hashes the results (SHA-512), encrypts them (AES-256-CBC, one
# block after the other) and hashes the layer (SHA-256); pre-run decrypts,
# hashes the plaintext (SHA-512), checks the input layer's digest and hashes
# the new layer (SHA-256 twice). Two cores do the sum in half the time, but
# no faster than the slowest single stream. Everything else (system calls,
# copies) is the plumbing the bound leaves out.
eval "$("$W/bin/sha512speed" -all | awk '{gsub("-","_",$1); print $1 "=" $2}')"
POST_BOUND=$(python3 -c "print(f'{1/max((1/$sha512+1/$aes_cbc_enc+1/$sha256)/2, 1/$sha512, 1/$aes_cbc_enc):.1f}')")
PRE_BOUND=$(python3 -c "print(f'{1/max((1/$sha512+1/$aes_cbc_dec+2/$sha256)/2, 1/$sha512):.1f}')")
echo "single-core SHA-256 $sha256, AES-256-CBC encryption $aes_cbc_enc, decryption $aes_cbc_dec MB/s; two-core bound: post-run $POST_BOUND MB/s, pre-run $PRE_BOUND MB/s"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# timed LABEL BYTES FILES CMD...: runs CMD under /usr/bin/time -v and appends a table row.
ROWS=()
timed() {
  local label=$1 bytes=$2 files=$3; shift 3
  local tf="$W/time.txt" walls=() rss=0 r w m
  for _ in $(seq 1 "$WARMUP"); do
    ${BEFORE:-true}
    sync
    "$@" >/dev/null 2>"$tf" || { cat "$tf" >&2; echo "bench: $label (warm-up) failed" >&2; exit 1; }
  done
  for _ in $(seq 1 "$REPEAT"); do
    ${BEFORE:-true} # remove the last run's output; reset the proxy's counters (they show the last run)
    sync            # start from written-back pages: earlier steps' writeback is not this run's cost
    /usr/bin/time -v "$@" >"$W/cmd.out" 2>"$tf" || { cat "$tf" >&2; echo "bench: $label failed" >&2; exit 1; }
    w=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tf")
    r=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$tf")
    walls+=("$w")
    rss=$(python3 -c "print(max($rss, $r))")
  done
  local wall
  wall=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') # median
  local mbs ratio fps pct=""
  mbs=$(python3 -c "print(f'{$bytes/1e6/max($wall,0.001):.1f}')")
  [ -n "${BOUND:-}" ] && pct=$(python3 -c "print(f'{100*$bytes/1e6/max($wall,0.001)/$BOUND:.0f}%')")
  ratio=$(python3 -c "print(f'{$bytes/1e6/max($wall,0.001)/$SHA:.2f}')")
  fps=$(python3 -c "print(f'{$files/max($wall,0.001):.0f}')")
  local runs="${walls[*]}"
  printf '%-44s %8.2fs %9s MB/s  %5s x SHA-512 %5s of bound  %7s MiB RSS  %8s files/s  (runs: %s)\n' "$label" "$wall" "$mbs" "$ratio" "${pct:--}" "$rss" "$fps" "$runs"
  ROWS+=("| $label | $wall | $runs | $mbs | $ratio | ${pct:-} | $rss | $fps |")
  LAST_WALL=$wall
}

cd "$W"
for k in researcher builder st1 st2; do "$P" keys generate "$k" >/dev/null; done
"$P" build "$ROOT/testdata/sample/master.oci.tar" --files "$ROOT/testdata/sample/train" --query "$ROOT/testdata/sample/query.json" \
  --creator-id r1 --user-key researcher.pem --builder-key builder.pem --route st1=st1.pub.pem --route st2=st2.pub.pem \
  -o oci-archive:train.tar --quiet >/dev/null

# Results sets.
mkresults() { # NAME MIB KIND
  local d="$W/res-$1" mib=$2 kind=$3
  set +o pipefail # yes(1) ends with SIGPIPE
  mkdir -p "$d"
  case $kind in
    random) head -c "$((mib << 20))" /dev/urandom >"$d/data.bin" ;;
    text) yes 'patient,1970-01-01,female,42,negative,station-aachen' | head -c "$((mib << 20))" >"$d/data.csv" ;;
    mixed)
      head -c "$((mib << 19))" /dev/urandom >"$d/images.bin"
      yes 'chr1 12345 A G 0.42 PASS' | head -c "$((mib << 18))" >"$d/variants.vcf"
      for i in $(seq 1 16); do yes "row $i" | head -c "$((mib << 14))" >"$d/part-$i.txt"; done ;;
  esac
  set -o pipefail
}
mksmall() {
  local d="$W/res-small"
  mkdir -p "$d"
  python3 - "$d" "$SMALL" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, f"{i // 1000:03d}")
    if i % 1000 == 0: os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"{i:06d}.txt"), "wb") as f:
        f.write(os.urandom(512) + b"x" * 512)
PY
}
dirbytes() { du -sb "$1" | cut -f1; }

echo
printf '%-44s %9s %14s %16s %14s %16s %16s\n' case wall throughput ratio bound "peak RSS" files/s
for mib in $SIZES; do
  for kind in random text mixed; do
    name="$kind-${mib}M"
    mkresults "$name" "$mib" "$kind"
    bytes=$(dirbytes "res-$name"); files=$(find "res-$name" -type f | wc -l)
    BEFORE="rm -f post-$name.tar" # a new output each run, as at a station (no old file to unlink)
    BOUND=$POST_BOUND timed "post-run oci-archive $name" "$bytes" "$files" "$P" post-run oci-archive:train.tar --results "res-$name" --station st1 --key st1.pem -o "oci-archive:post-$name.tar" --quiet
    BEFORE="rm -f pre-$name.tar"
    BOUND=$PRE_BOUND timed "pre-run oci-archive $name" "$bytes" "$files" "$P" pre-run "oci-archive:post-$name.tar" --station st2 --key st2.pem -o "oci-archive:pre-$name.tar" --quiet
    rm -f "pre-$name.tar"
    if [ "${BENCH_PROFILE:-1}" = 1 ] && [ "$kind" = random ] && [ "$mib" -ge 1024 ]; then
      sync # as for the timed runs: the last output (pre-run's) removed, then sync
      PHTOCI_CPUPROFILE="$W/post.prof" "$P" post-run oci-archive:train.tar --results "res-$name" --station st1 --key st1.pem -o "oci-archive:prof.tar" --quiet
      go tool pprof -top -nodecount=25 "$P" "$W/post.prof" >"$ROOT/bench/profile-post-run-1G.txt" 2>/dev/null || true
    fi
    rm -f "prof.tar"
    [ "$kind" = mixed ] || { rm -rf "res-$name"; rm -f "post-$name.tar"; }
  done
done
mksmall
bytes=$(dirbytes res-small)
BEFORE="rm -f post-small.tar"
timed "post-run oci-archive $SMALL x 1 KiB" "$bytes" "$SMALL" "$P" post-run oci-archive:train.tar --results res-small --station st1 --key st1.pem -o oci-archive:post-small.tar --quiet
BEFORE="rm -f pre-small.tar"
timed "pre-run oci-archive $SMALL x 1 KiB" "$bytes" "$SMALL" "$P" pre-run oci-archive:post-small.tar --station st2 --key st2.pem -o oci-archive:pre-small.tar --quiet
rm -rf res-small pre-small.tar post-small.tar

# docker-archive (docker save tarballs) out and in, for the largest mixed results.
mib=$(echo "$SIZES" | awk '{print $NF}'); name="mixed-${mib}M"
bytes=$(dirbytes "res-$name"); files=$(find "res-$name" -type f | wc -l)
BEFORE="rm -f post-$name.docker.tar"
timed "post-run docker-archive $name" "$bytes" "$files" "$P" post-run oci-archive:train.tar --results "res-$name" --station st1 --key st1.pem -o "docker-archive:post-$name.docker.tar" --quiet
BEFORE="rm -f pre-$name.docker.tar"
timed "pre-run docker-archive $name" "$bytes" "$files" "$P" pre-run "docker-archive:post-$name.docker.tar" --station st2 --key st2.pem -o "docker-archive:pre-$name.docker.tar" --quiet
rm -f "post-$name.docker.tar" "pre-$name.docker.tar"
# A docker-archive as `docker save` and skopeo write it: plain layers.
skopeo copy -q "oci-archive:post-$name.tar" "docker-archive:save-$name.docker.tar:pht/train:st1"
BEFORE="rm -f pre-$name.docker.tar"
timed "pre-run docker-archive (docker save form) $name" "$bytes" "$files" "$P" pre-run "docker-archive:save-$name.docker.tar" --station st2 --key st2.pem -o "docker-archive:pre-$name.docker.tar" --quiet
rm -f "save-$name.docker.tar" "pre-$name.docker.tar"
BEFORE=

# Registry → registry, with a counting proxy in front of a local registry.
REGPORT=$(freeport); PXPORT=$(freeport)
mkdir -p "$W/registry"
cat >"$W/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$REGPORT}
YML
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
"$W/bin/countproxy" -listen "127.0.0.1:$PXPORT" -target "http://127.0.0.1:$REGPORT" >"$W/proxy.log" 2>&1 &
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PXPORT/v2/" >/dev/null && break; sleep 0.1; done
REG=127.0.0.1:$PXPORT
stats() { curl -s "http://$REG/_stats"; }
reset() { curl -s -X POST "http://$REG/_reset" >/dev/null; }

mib=$(echo "$SIZES" | awk '{print $NF}'); name="mixed-${mib}M"
bytes=$(dirbytes "res-$name"); files=$(find "res-$name" -type f | wc -l)
skopeo copy -q --dest-tls-verify=false "oci-archive:post-$name.tar" "docker://$REG/pht/train:st1" 
# Every run of a registry case writes to a repository of its own (RUNNO):
# a repeated push would find its blobs there already and upload nothing.
RUNNO=0
nextrun() { reset; RUNNO=$((RUNNO + 1)); export RUNNO REG; }
BEFORE=nextrun
export P
timed "pre-run registry $name" "$bytes" "$files" sh -c 'exec "$P" pre-run "$REG/pht/train:st1" --station st2 --key st2.pem -o "$REG/pre$RUNNO/train:st1-decrypted" --quiet'
echo "  transfer: $(stats)"
timed "post-run registry→registry $name" "$bytes" "$files" sh -c 'exec "$P" post-run "$REG/pht/train:st1" --results "res-'"$name"'" --station st2 --key st2.pem -o "$REG/post$RUNNO/train:st2" --quiet'
POST_WALL=$LAST_WALL
POST_STATS=$(stats)
echo "  transfer: $POST_STATS"
# The floor: crane append of an equally sized layer onto the same image.
# Equally sized as stored and uploaded: post-run's own new layer (ciphertext,
# gzip of stored blocks), fetched from the last post-run's repository; crane
# finds it compressed and uploads it as it is. For reference also the
# results as a plain tar, which crane gzips (compressible results shrink,
# ciphertext does not: that layer is smaller than post-run's).
NEWLAYER=$(crane manifest --insecure "$REG/post$RUNNO/train:st2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][-1]["digest"])')
crane blob --insecure "$REG/post$RUNNO/train@$NEWLAYER" >"$W/layer.tar.gz"
LAYER_MB=$(python3 -c "print(f'{$(stat -c %s "$W/layer.tar.gz")/1e6:.0f}')")
tar -C "res-$name" -cf "$W/layer.tar" .
export W
timed "crane append (post-run's layer, $LAYER_MB MB)" "$bytes" "$files" sh -c 'exec crane append --insecure -b "$REG/pht/train:st1" -f "$W/layer.tar.gz" -t "$REG/crane$RUNNO/train:st1"'
CRANE_WALL=$LAST_WALL
CRANE_STATS=$(stats)
echo "  transfer: $CRANE_STATS"
timed "crane append (results as plain tar, gzipped by crane)" "$bytes" "$files" sh -c 'exec crane append --insecure -b "$REG/pht/train:st1" -f "$W/layer.tar" -t "$REG/cranetar$RUNNO/train:st1"'
CRANE_TAR_WALL=$LAST_WALL
CRANE_TAR_STATS=$(stats)
echo "  transfer: $CRANE_TAR_STATS"
timed "skopeo copy train between repositories" "$bytes" "$files" sh -c 'exec skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$REG/pht/train:st1" "docker://$REG/skopeo$RUNNO/train:st1"'
echo "  transfer: $(stats)"
BEFORE=
CRYPTO=$(python3 -c "print(f'{$bytes/1e6/$SHA:.2f}')")
VERDICT=$(python3 -c "print('yes' if $POST_WALL <= 1.5*$CRANE_WALL + $CRYPTO else 'no')")
VERDICT_TAR=$(python3 -c "print('yes' if $POST_WALL <= 1.5*$CRANE_TAR_WALL + $CRYPTO else 'no')")

{
  echo "# phtoci benchmarks"
  echo
  echo "Written by \`make bench\` ($(date -u +%Y-%m-%d), $(nproc) cores, $(go version | awk '{print $3}'))."
  echo "Single-core SHA-512 on this machine: **$SHA MB/s** (best of four one-second rounds); ratios below are throughput / that."
  echo "Single-core SHA-256 $sha256 MB/s, AES-256-CBC encryption $aes_cbc_enc MB/s, decryption $aes_cbc_dec MB/s. The crypto bound of a step is what two cores"
  echo "could do if they did nothing but its crypto (post-run: SHA-512, AES encryption, SHA-256 of the layer; pre-run: AES decryption, SHA-512, SHA-256 of the input"
  echo "and of the new layer), split evenly and no faster than the slowest single stream: post-run **$POST_BOUND MB/s**, pre-run **$PRE_BOUND MB/s**."
  echo "Each case ran $WARMUP time(s) untimed (warm-up), then $REPEAT times timed, each after \`sync\` and with its output removed: median wall time, highest peak RSS."
  echo
  echo "| case | wall s (median) | runs s | MB/s | × SHA-512 | of the crypto bound | peak RSS MiB | files/s |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Registry → registry post-run transfer (counting proxy): \`$POST_STATS\`."
  echo "post-run wall $POST_WALL s vs crane append of an equally sized layer (post-run's own $LAYER_MB MB layer blob) $CRANE_WALL s + crypto time $CRYPTO s"
  echo "(SHA-512 of the results only; post-run also encrypts them, and decrypts and hashes the previous results it checks): within 1.5× + crypto: **$VERDICT**."
  echo "Against crane append of the results as a plain tar, which crane gzips (\`$CRANE_TAR_STATS\`: a smaller layer than post-run's when results compress), $CRANE_TAR_WALL s: **$VERDICT_TAR**."
  if [ -f "$ROOT/bench/profile-post-run-1G.txt" ]; then
    echo
    echo "CPU profile of post-run, 1 GiB random results, oci-archive (\`bench/profile-post-run-1G.txt\`, top entries):"
    echo
    echo '```'
    sed -n '/flat  flat%/,+12p' "$ROOT/bench/profile-post-run-1G.txt"
    echo '```'
  fi
  echo
  cat "$ROOT/bench/notes.md"
} >"$OUT"
echo
echo "bench: wrote $OUT"
