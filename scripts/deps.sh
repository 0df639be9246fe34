#!/usr/bin/env bash
# Install everything the build, the tests and the demo need. Idempotent and fast
# when all is present: apt-get update/install run only if a package is missing,
# npm only if t/client/node_modules is missing or older than its lock file.
#
#   scripts/deps.sh            # needs root for apt-get (or everything already installed)
#   NO_NPM=1 scripts/deps.sh   # skip the npm part
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

PKGS=(nginx nginx-dev prometheus prometheus-alertmanager wrk nghttp2-client hyperfine
      valgrind clang dpkg-dev curl jq build-essential libssl-dev zlib1g-dev libpcre2-dev
      perl ca-certificates faketime debhelper chromium)

missing=()
for p in "${PKGS[@]}"; do
  st="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
  [ "$st" = installed ] || missing+=("$p")
done
# node + npm: Node.js 20 is expected on the machine; fall back to Debian's packages
command -v node >/dev/null || missing+=(nodejs)
command -v npm  >/dev/null || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps.sh: installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
else
  echo "deps.sh: apt packages present"
fi

# chromium: t/46-status-page.t renders the status page in it (headless).
# Debian's nginx package starts a service on install in a normal system; tests use
# their own private instances, nothing here needs the system one.

if [ -z "${NO_NPM:-}" ]; then
  C="$REPO/t/client"
  if [ -f "$C/package.json" ]; then
    if [ ! -f "$C/node_modules/openai/package.json" ] \
       || [ ! -f "$C/node_modules/.package-lock.json" ] \
       || { [ -f "$C/package-lock.json" ] && [ "$C/package-lock.json" -nt "$C/node_modules/.package-lock.json" ]; }; then
      echo "deps.sh: npm install in t/client"
      if [ -f "$C/package-lock.json" ]; then
        (cd "$C" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
      else
        (cd "$C" && npm install --no-audit --no-fund --loglevel=error </dev/null)
      fi
    else
      echo "deps.sh: t/client/node_modules up to date"
    fi
  fi
fi
