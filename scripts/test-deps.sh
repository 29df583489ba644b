#!/usr/bin/env bash
# Makes sure the programs the tests drive are present: the CNCF distribution
# registry (Debian's docker-registry), skopeo, umoci, PostgreSQL and chromium, plus any given as
# COMMAND:PACKAGE arguments. Installs them when
# missing and this machine allows it (root with apt-get); otherwise stops with
# the exact command to run. Tests never skip because one of them is missing.
set -euo pipefail
need=()
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
# PostgreSQL for the serve tests on a shared store (internal/testpg runs its
# own server in a temporary directory; the package's cluster is not used).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# Headless Chromium loads serve's status page in a test.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The release test checks the release signature with Debian's minisign.
command -v minisign >/dev/null 2>&1 || need+=(minisign)
# ip (iproute2) brings up the loopback of the network namespaces in which
# the shipped serve configs start on their fixed ports (cmd/phtoci).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# systemd-analyze verifies the shipped unit and rates its sandbox.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# lintian checks the release's .deb (tools/release).
command -v lintian >/dev/null 2>&1 || need+=(lintian)
# More as COMMAND:PACKAGE arguments (bench/run.sh asks for /usr/bin/time, curl, python3).
for arg in "$@"; do
  command -v "${arg%%:*}" >/dev/null 2>&1 || need+=("${arg#*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
cmd="apt-get update && apt-get install -y --no-install-recommends ${need[*]}"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's docker-registry package starts a system service on :5000; the
  # tests start their own registries on free ports and do not need it.
  (systemctl stop docker-registry 2>/dev/null || service docker-registry stop 2>/dev/null || true) >/dev/null 2>&1
  (systemctl stop postgresql 2>/dev/null || service postgresql stop 2>/dev/null || true) >/dev/null 2>&1
  exit 0
fi
echo "test-deps: missing ${need[*]}; run as root: $cmd" >&2
exit 1
