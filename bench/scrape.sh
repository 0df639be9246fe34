#!/usr/bin/env bash
# bench/scrape.sh - what one scrape costs at 1,000 and 10,000 label sets, per
# format (text 0.0.4, OpenMetrics 1.0.0 and protobuf, asked for with the Accept
# of Prometheus 2.42 --enable-feature=native-histograms): the median of RUNS scrapes
# (curl time_total, no compression), the body bytes, and the worker's memory
# growth during a scrape.
#
#   bench/scrape.sh                               the module in build/modules/
#   SO=/path/to/other.so bench/scrape.sh          e.g. main's build, for "before"
#   RUNS=20 RATE=8M NGINX=/usr/sbin/nginx         (defaults)
#
# Label sets: deepseek_metrics_label k $arg_k, one 937 B chat completion with
# usage each (bench/fixtures/chat.json), so each series has requests_total,
# the latency histogram, 3 token series and reasoning tokens; the zone has
# the default histograms.  Memory: a reload gives a fresh worker (the zone is
# kept); its RssAnon (private memory: the shared zone is RssShmem) is sampled
# every 10 ms during its first scrape of the format, read by curl at RATE
# bytes/s so the scrape lasts; growth = peak - before.  One worker, 127.0.0.1
# only; nginx is stopped by PID at the end.  See docs/performance.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SO="${SO:-$ROOT/build/modules/ngx_http_deepseek_metrics_module.so}"
NGINX="${NGINX:-/usr/sbin/nginx}"
RUNS="${RUNS:-20}"
RATE="${RATE:-8M}"

for t in curl python3 "$NGINX"; do
  command -v "$t" >/dev/null 2>&1 || { echo "bench/scrape.sh: $t missing" >&2; exit 1; }
done
[ -f "$SO" ] || { echo "bench/scrape.sh: no module at $SO (make build)" >&2; exit 1; }

W="$(mktemp -d /tmp/dsm-scrape.XXXXXX)"
chmod 755 "$W"
mkdir -p "$W/conf" "$W/logs" "$W/temp" "$W/html"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BODY="$(tr -d '\n' < "$ROOT/bench/fixtures/chat.json")"
MASTER=""

cleanup() {
  if [ -n "$MASTER" ] && kill -0 "$MASTER" 2>/dev/null; then
    kill -QUIT "$MASTER"
    for _ in $(seq 50); do kill -0 "$MASTER" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$MASTER" 2>/dev/null && kill -KILL "$MASTER"
  fi
  rm -rf "$W"
}
trap cleanup EXIT

cat > "$W/conf/nginx.conf" <<EOF
load_module $SO;
worker_processes 1;
pid $W/logs/nginx.pid;
error_log $W/logs/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $W/temp/body;
    proxy_temp_path $W/temp/proxy;
    fastcgi_temp_path $W/temp/fastcgi;
    uwsgi_temp_path $W/temp/uwsgi;
    scgi_temp_path $W/temp/scgi;
    keepalive_requests 100000;

    deepseek_metrics_zone lab:18m max_series=12000;

    server {
        listen 127.0.0.1:$PORT;
        location /fill/ {
            deepseek_metrics lab;
            deepseek_metrics_label k \$arg_k;
            default_type application/json;
            return 200 '$BODY';
        }
        location = /metrics { deepseek_metrics_export lab; }
        location = /static.txt { root $W/html; }
    }
}
EOF

"$NGINX" -p "$W/" -c "$W/conf/nginx.conf"
for _ in $(seq 50); do [ -s "$W/logs/nginx.pid" ] && break; sleep 0.1; done
MASTER="$(cat "$W/logs/nginx.pid")"

worker() { pgrep -P "$MASTER" | head -1; }

rss_anon() { awk '/^RssAnon:/ { print $2 * 1024 }' "/proc/$1/status"; }

# utime + stime in clock ticks
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ="$(getconf CLK_TCK)"

# a new worker, the zone kept; waits until the old one is gone
fresh_worker() {
  local old new
  old="$(worker)"
  kill -HUP "$MASTER"
  for _ in $(seq 100); do
    new="$(pgrep -P "$MASTER" | grep -vx "$old" | head -1 || true)"
    if [ -n "$new" ] && ! kill -0 "$old" 2>/dev/null; then break; fi
    sleep 0.05
  done
  sleep 0.2
  worker
}

TEXT='text/plain;version=0.0.4'
OM='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
PB='application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.7,text/plain;version=0.0.4;q=0.6,*/*;q=0.5'
URL="http://127.0.0.1:$PORT/metrics"

echo "module: $SO"
echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*: //'), 1 worker; $RUNS scrapes each, curl time_total"
printf '%-10s %-12s %10s %10s %11s %12s %16s\n' "label sets" "format" "median" "p90" \
       "worker cpu" "bytes" "worker growth"

# the median of RUNS downloads of $1 with Accept $2, in ms
median() {
  for _ in $(seq "$RUNS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Accept: $2" "$1"
  done | sort -n | awk '{ v[NR] = $1 * 1000 }
    END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

filled=0
for n in 1000 10000; do
  # one curl process, one keepalive connection, URLs by globbing
  curl -s "http://127.0.0.1:$PORT/fill/v1/chat/completions?k=[$((filled + 1))-$n]" > /dev/null
  filled=$n

  for fmt in text openmetrics protobuf; do
    case "$fmt" in
      text) accept="$TEXT" ;;
      openmetrics) accept="$OM" ;;
      *) accept="$PB" ;;
    esac

    pid="$(fresh_worker)"
    before="$(rss_anon "$pid")"
    peak="$before"
    curl -s -o /dev/null --limit-rate "$RATE" -H "Accept: $accept" "$URL" &
    cpid=$!
    while kill -0 "$cpid" 2>/dev/null; do
      r="$(rss_anon "$pid" || echo 0)"
      [ "${r:-0}" -gt "$peak" ] && peak="$r"
      sleep 0.01
    done
    wait "$cpid"

    times=()
    bytes=0
    cpu0="$(cpu "$pid")"
    for _ in $(seq "$RUNS"); do
      read -r t b < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' \
                        -H "Accept: $accept" "$URL")
      times+=("$t")
      bytes="$b"
    done
    cpu1="$(cpu "$pid")"

    printf '%s\n' "${times[@]}" | sort -n | awk -v n="$n" -v f="$fmt" -v b="$bytes" \
        -v g="$((peak - before))" -v c="$(( (cpu1 - cpu0) * 1000 / HZ ))" -v r="$RUNS" '
      { v[NR] = $1 * 1000 }
      END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p = v[int(NR * 0.9 + 0.5)]
        printf "%-10s %-12s %7.2f ms %7.2f ms %8.1f ms %12d %13.2f MB\n",
               n, f, m, p, c / r, b, g / 1048576
      }'
  done
done

curl -s -H "Accept: $TEXT" -o "$W/html/static.txt" "$URL"
used="$(sed -n 's/^deepseek_metrics_series{zone="lab",state="used"} //p' "$W/html/static.txt")"
echo "series used: $used"
echo "the floor: the same $(stat -c %s "$W/html/static.txt")-byte text as a static file" \
     "(nginx, sendfile off): median $(median "http://127.0.0.1:$PORT/static.txt" "$TEXT") ms"
