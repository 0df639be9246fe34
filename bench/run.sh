#!/usr/bin/env bash
# bench/run.sh - the module's benchmark in one command (`make bench`).
#
# Builds the module (scripts/build.sh, gcc), then runs bench/dsmbench.py on
# Debian's /usr/sbin/nginx: throughput on vs off (wrk, interleaved rounds),
# callgrind instructions added per request, scrape time and instructions at
# 1,000 / 10,000 label sets, zone bytes per label set, and the parser's
# instructions per body byte (bench/parser-bytes.sh).  Prints a table and
# writes bench/results-<date>-<time>.txt.  About 7-8 minutes on 2 cores.
#
#   bench/run.sh                     full run
#   QUICK=1 bench/run.sh             2 x 3 s throughput rounds
#   ONLY=cg,zone bench/run.sh        sections: tput,cg,scrape,zone,parser
#   NO_BUILD=1 SO=/path/module.so bench/run.sh
#
# Needs: wrk, h2load (nghttp2-client), valgrind, curl, taskset, ss, python3
# (scripts/deps.sh installs them).  Uses 127.0.0.1 only; every process it
# starts is stopped by PID at the end.  See docs/performance.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
for t in wrk h2load valgrind callgrind_annotate taskset curl ss python3 objcopy; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench/run.sh: missing tools: ${missing[*]}" >&2
  echo "  install: scripts/deps.sh   (apt-get install wrk nghttp2-client valgrind)" >&2
  exit 1
fi

if [ -z "${NO_BUILD:-}" ]; then
  CC=gcc "$ROOT/scripts/build.sh"
fi

# the gcc tree's own output: build/modules/ is shared with clang builds
export SO="${SO:-$ROOT/build/nginx-dev/objs/ngx_http_deepseek_metrics_module.so}"

exec python3 "$ROOT/bench/dsmbench.py"
