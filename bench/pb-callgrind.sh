#!/usr/bin/env bash
# bench/pb-callgrind.sh - the worker's instructions per protobuf scrape at
# N label sets (default 10,000; filled as bench/scrape.sh does): nginx
# (master_process off) under valgrind --tool=callgrind, run twice: fill + 1
# protobuf scrape, fill + 3; Ir per scrape = (Ir(3) - Ir(1)) / 2.  The
# second run's profile is kept in $OUT.3 for callgrind_annotate.
#
#   bench/pb-callgrind.sh                      the module in build/modules/
#   SO=/tmp/pb-before.so bench/pb-callgrind.sh
#   N=10000 OUT=/tmp/pb-cg NGINX=/usr/sbin/nginx ACCEPT=...   (defaults)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SO="${SO:-$ROOT/build/modules/ngx_http_deepseek_metrics_module.so}"
NGINX="${NGINX:-/usr/sbin/nginx}"
N="${N:-10000}"
OUT="${OUT:-/tmp/pb-cg.$$}"
ACCEPT="${ACCEPT:-application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.7,text/plain;version=0.0.4;q=0.6,*/*;q=0.5}"

W="$(mktemp -d /tmp/dsm-pbcg.XXXXXX)"
chmod 755 "$W"
mkdir -p "$W/conf" "$W/logs" "$W/temp"
BODY="$(tr -d '\n' < "$ROOT/bench/fixtures/chat.json")"
VG=""

cleanup() {
  if [ -n "$VG" ] && kill -0 "$VG" 2>/dev/null; then
    kill -TERM "$VG"
    wait "$VG" 2>/dev/null || true
  fi
  rm -rf "$W"
}
trap cleanup EXIT

run() {    # $1: scrapes; prints the total Ir
  local port scrapes=$1
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  cat > "$W/conf/nginx.conf" <<CONF
load_module $SO;
master_process off;
daemon off;
pid $W/logs/nginx.pid;
error_log $W/logs/error.log warn;
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
        listen 127.0.0.1:$port;
        location /fill/ {
            deepseek_metrics lab;
            deepseek_metrics_label k \$arg_k;
            default_type application/json;
            return 200 '$BODY';
        }
        location = /metrics { deepseek_metrics_export lab; }
    }
}
CONF
  valgrind --tool=callgrind --callgrind-out-file="$OUT.$scrapes" \
      "$NGINX" -p "$W/" -c "$W/conf/nginx.conf" 2> "$W/logs/vg.log" &
  VG=$!
  for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$port/metrics" 2>/dev/null && break
    sleep 0.1
  done
  curl -s "http://127.0.0.1:$port/fill/v1/chat/completions?k=[1-$N]" > /dev/null
  for _ in $(seq "$scrapes"); do
    curl -s -o "$W/body" -H "Accept: $ACCEPT" "http://127.0.0.1:$port/metrics"
  done
  kill -TERM "$VG"
  wait "$VG" || true
  VG=""
  awk '/^summary:/ { print $2 }' "$OUT.$scrapes"
}

one="$(run 1)"
three="$(run 3)"
echo "module: $SO"
echo "label sets: $N, body: $(stat -c %s "$W/body") bytes"
echo "Ir per protobuf scrape: $(( (three - one) / 2 ))"
echo "profile: callgrind_annotate --inclusive=no $OUT.3"
