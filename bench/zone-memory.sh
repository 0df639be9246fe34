#!/usr/bin/env bash
# bench/zone-memory.sh - resident memory of a deepseek_metrics_zone (64m by
# default) before any traffic and after 1,000 and 10,000 label sets.
#
#   bench/zone-memory.sh                        this tree's gcc build
#   SO=/path/other.so bench/zone-memory.sh      another build (e.g. main's)
#   SIZE=10m WORKERS=4 bench/zone-memory.sh
#
# nginx maps a shared zone as one anonymous shared mapping, shown as
# "/dev/zero (deleted)" in /proc/PID/smaps, in the master and every worker.
# The honest figure is the whole system's: the pages of that shared memory
# object that are resident, whoever touched them, as fincore(1) reports
# them for /proc/MASTER/map_files/<range> (mincore() on a shared mapping
# reports the object's pages, not this process's page table).  Rss and Pss
# only count pages mapped in a live process: the zone is initialised by
# the process that parses the configuration, which exits when nginx goes
# to the background (daemon on), so pages only it touched show in no
# process's smaps; both are printed for comparison (worker Rss: the
# largest of the workers; Pss: summed over the master and the workers).
#
# Label sets: deepseek_metrics_label k $arg_k, one 200 chat.completion
# (bench/fixtures/chat.json, 937 B with usage) per label set, through h2load
# on one keep-alive connection.  Only 127.0.0.1; nginx is stopped by its pid.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NGINX="${NGINX:-/usr/sbin/nginx}"
SO="${SO:-$ROOT/build/nginx-dev/objs/ngx_http_deepseek_metrics_module.so}"
SIZE="${SIZE:-64m}"
WORKERS="${WORKERS:-2}"

for t in h2load curl python3 fincore; do
  command -v "$t" >/dev/null || { echo "zone-memory.sh: needs $t" >&2; exit 1; }
done
[ -f "$SO" ] || { echo "zone-memory.sh: no module at $SO (make build)" >&2; exit 1; }

case "$SIZE" in
  *m) KB=$(( ${SIZE%m} * 1024 )) ;;
  *k) KB=${SIZE%k} ;;
  *) echo "zone-memory.sh: SIZE like 64m or 4096k" >&2; exit 1 ;;
esac

D="$(mktemp -d /tmp/dsm-zone-memory.XXXXXX)"
MASTER=""
cleanup() {
  if [ -n "$MASTER" ] && kill -0 "$MASTER" 2>/dev/null; then
    kill -QUIT "$MASTER" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$MASTER" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$D"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BODY="$(tr -d '\n' < "$ROOT/bench/fixtures/chat.json")"

mkdir -p "$D/logs"
cat > "$D/nginx.conf" <<EOF
load_module $SO;
worker_processes $WORKERS;
error_log $D/logs/error.log notice;
pid $D/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $D/body;
    proxy_temp_path $D/proxy;
    fastcgi_temp_path $D/fastcgi;
    uwsgi_temp_path $D/uwsgi;
    scgi_temp_path $D/scgi;
    keepalive_requests 1000000;

    deepseek_metrics_zone mem:$SIZE;

    server {
        listen 127.0.0.1:$PORT;
        deepseek_metrics mem;
        deepseek_metrics_label k \$arg_k;
        location /fill/ {
            default_type application/json;
            return 200 '$BODY';
        }
        location = /metrics { deepseek_metrics off; deepseek_metrics_export mem; }
    }
}
EOF

"$NGINX" -p "$D/" -c "$D/nginx.conf"
for _ in $(seq 50); do [ -s "$D/nginx.pid" ] && break; sleep 0.1; done
MASTER="$(cat "$D/nginx.pid")"

# wait until every worker is up
for _ in $(seq 50); do
  [ "$(ps --ppid "$MASTER" -o pid= | wc -l)" -ge "$WORKERS" ] && break
  sleep 0.1
done
sleep 0.5

# "resident worker_rss_max pss_sum" of the zone's mapping, in kB
zone_kb() {
  local pids p range res
  range="$(awk -v kb="$KB" '
      /^[0-9a-f]+-[0-9a-f]+ / { r = ($0 ~ /\/dev\/zero \(deleted\)$/) ? $1 : ""; next }
      r != "" && $1 == "Size:" && $2 == kb { print r; exit }' "/proc/$MASTER/smaps")"
  res="$(fincore -b -n -o RES "/proc/$MASTER/map_files/$range")"
  pids="$MASTER $(ps --ppid "$MASTER" -o pid= | tr '\n' ' ')"
  for p in $pids; do
    awk -v kb="$KB" -v pid="$p" '
      /^[0-9a-f]+-[0-9a-f]+ / { z = ($0 ~ /\/dev\/zero \(deleted\)$/); s = 0; next }
      z && $1 == "Size:" { s = ($2 == kb) }
      z && s && $1 == "Rss:" { rss += $2 }
      z && s && $1 == "Pss:" { pss += $2 }
      END { print pid, rss + 0, pss + 0 }' "/proc/$p/smaps"
  done | awk -v m="$MASTER" -v res="$res" '
      $1 != m && $2 > wr { wr = $2 } { ps += $3 }
      END { print res / 1024, wr + 0, ps + 0 }'
}

fill() {
  local from="$1" to="$2" i
  for i in $(seq "$from" "$to"); do
    echo "http://127.0.0.1:$PORT/fill/v1/chat/completions?k=$i"
  done > "$D/uris.txt"
  h2load --h1 -n $(( to - from + 1 )) -c 1 -m 1 -i "$D/uris.txt" \
    | grep -q "$(( to - from + 1 )) succeeded" \
    || { echo "zone-memory.sh: h2load: not every request succeeded" >&2; exit 1; }
}

metric() {
  curl -s "http://127.0.0.1:$PORT/metrics" \
    | awk -v want="$1" 'index($0, want " ") == 1 { print $2 }'
}

echo "zone $SIZE, $WORKERS workers, module $SO"
printf '%-20s %12s %12s %12s %8s\n' "" "resident" "worker Rss" "sum of Pss" "series"

row() {
  read -r res wr ps <<< "$(zone_kb)"
  printf '%-20s %9s kB %9s kB %9s kB %8s\n' "$1" "$res" "$wr" "$ps" "$2"
}

row "before traffic" 0
fill 1 1000
row "1,000 label sets" "$(metric 'deepseek_metrics_series{zone="mem",state="used"}')"
fill 1001 10000
row "10,000 label sets" "$(metric 'deepseek_metrics_series{zone="mem",state="used"}')"

CAP="$(metric 'deepseek_metrics_series{zone="mem",state="capacity"}')"
echo "capacity $CAP label sets: $(( KB * 1024 / CAP )) bytes a label set (zone size / capacity)"
