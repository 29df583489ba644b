#!/usr/bin/env bash
# bench/startup.sh [BINARY...]: the CPU a phtoci command spends before and
# around its first registry request (issue 29: start-up to first registry
# request <= 10 ms CPU). For each binary (default: this tree's), averaged
# over N runs (BENCH_REPEAT, 30), user+system CPU of:
#   version  `phtoci --version`: process start and package init alone
#   first    `phtoci verify 127.0.0.1:1/x/y:z`: start-up plus the first
#            registry request, refused at once (nothing listens on port 1)
#   verify   a keyless verify of a one-station train in a local registry
# Alternate binaries to compare builds on a busy machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
./scripts/test-deps.sh docker-registry:docker-registry skopeo:skopeo python3:python3
W=$(mktemp -d /var/tmp/phtoci-startup.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
if [ $# -eq 0 ]; then
  CGO_ENABLED=0 go build -trimpath -o "$W/phtoci" ./cmd/phtoci
  set -- "$W/phtoci"
fi
P=$1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$W/reg.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $W/reg
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 &
(cd "$W" && for k in researcher builder st1; do "$P" keys generate "$k" >/dev/null; done
  "$P" build "oci-archive:$ROOT/testdata/sample/master.oci.tar" --files "$ROOT/testdata/sample/train" \
    --query "$ROOT/testdata/sample/query.json" --creator-id r1 --user-key researcher.pem --builder-key builder.pem \
    --route st1=st1.pub.pem --source-address x/master --source-tag latest -o oci-archive:train.tar --quiet >/dev/null)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false "oci-archive:$W/train.tar" "docker://127.0.0.1:$PORT/b/train:1"
python3 - "$PORT" "$@" <<'PY'
import os, resource, subprocess, sys
port, bins = sys.argv[1], sys.argv[2:]
n = int(os.environ.get("BENCH_REPEAT", "30"))
cases = [("version", ["--version"]), ("first", ["verify", "127.0.0.1:1/x/y:z"]),
         ("verify", ["verify", f"127.0.0.1:{port}/b/train:1", "--quiet"])]
def cpu(args):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PHTOCI_CACHE="none"))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) / n * 1000, (r1.ru_stime - r0.ru_stime) / n * 1000
print(f"CPU per run, mean of {n} (ms: user + system = total)")
print("| binary | " + " | ".join(c for c, _ in cases) + " |")
print("|---|" + "---|" * len(cases))
for rnd in range(2):
    for b in bins:
        row = []
        for _, a in cases:
            u, s = cpu([b] + a)
            row.append(f"{u:.1f} + {s:.1f} = {u+s:.1f}")
        print(f"| {os.path.basename(os.path.dirname(b)) or b}/{os.path.basename(b)} | " + " | ".join(row) + " |")
PY
