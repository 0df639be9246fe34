#!/usr/bin/env bash
# The whole monitoring stack on one machine, from the repository alone:
#   nginx + ngx_http_deepseek_metrics_module in front of the mock DeepSeek upstream
#   (or the real API when DEEPSEEK_API_KEY is set), Prometheus with the rules,
#   Alertmanager with the example routing and a local webhook receiver, a bounded
#   demo load; then it prints where to look and a few live query results. From a
#   terminal it keeps everything running (with a light load, so the numbers move)
#   until Ctrl-C; without one (CI, make test) it stops by itself. Either way it
#   stops everything it started, by PID.
#
#   make demo                         # = scripts/demo.sh
#   DEMO_SECONDS=120 make demo        # length of the demo load (default 60)
#   DEMO_KEEP=1 make demo             # keep everything running until Ctrl-C, even without a terminal
#   DEMO_KEEP=0 make demo             # stop at the end, even from a terminal
#   DEMO_KEEP_SECONDS=N               # while kept up: light load for at most N s (default 3600)
#   DEEPSEEK_API_KEY=sk-... make demo # real https://api.deepseek.com (a few tiny requests only)
#   DEMO_FAST_ALERTS=0                # shipped alert timings (default: `for:` shortened to 10s
#                                     # and 5m windows to 1m, so alerts fire during the demo)
#   DEMO_SKIP_DEPS=1 / DEMO_SKIP_BUILD=1   skip scripts/deps.sh / scripts/build.sh
#   DEMO_DIR=/path                    instead of build/demo (removed and recreated)
#
# Everything lives under build/demo/ (configs, data, logs); ports are 8080 (API),
# 9145 (metrics), 9090 (Prometheus), 9093 (Alertmanager), 9099 (webhook) when free,
# other free ports otherwise. All listeners are on 127.0.0.1.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${DEMO_DIR:-$REPO/build/demo}"
DEMO_SECONDS="${DEMO_SECONDS:-60}"
NGINX="${NGINX:-/usr/sbin/nginx}"
MODULE="$REPO/build/modules/ngx_http_deepseek_metrics_module.so"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ processes
PIDS=()      # started processes, stopped in reverse order
NAMES=()
NGINX_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "${#PIDS[@]}" -gt 0 ]; then
    say "stopping the demo"
    local i pid name
    for ((i=${#PIDS[@]}-1; i>=0; i--)); do
      pid="${PIDS[$i]}"; name="${NAMES[$i]}"
      kill -0 "$pid" 2>/dev/null || continue
      if [ "$pid" = "$NGINX_PID" ]; then kill -QUIT "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      wait "$pid" 2>/dev/null || true
      echo "    stopped $name (pid $pid)"
    done
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started() { PIDS+=("$1"); NAMES+=("$2"); echo "    started $2 (pid $1)"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
pick_port() { if port_busy "$1"; then free_port; else echo "$1"; fi; }

wait_port() { # wait_port PORT WHAT PID LOG
  local i
  for i in $(seq 1 150); do
    port_busy "$1" && return 0
    kill -0 "$3" 2>/dev/null || { tail -n 20 "$4" >&2; die "$2 exited while starting (log: $4)"; }
    sleep 0.1
  done
  tail -n 20 "$4" >&2
  die "$2 did not listen on 127.0.0.1:$1 within 15 s (log: $4)"
}
wait_http() { # wait_http URL WHAT
  local i
  for i in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$2 not ready at $1"
}

# ------------------------------------------------------------------ deps + build
if [ -z "${DEMO_SKIP_DEPS:-}" ]; then
  say "dependencies (scripts/deps.sh)"
  "$REPO/scripts/deps.sh"
fi
if [ -z "${DEMO_SKIP_BUILD:-}" ]; then
  say "building the module (scripts/build.sh)"
  "$REPO/scripts/build.sh"
fi
[ -f "$MODULE" ] || die "module not built: $MODULE"
for b in "$NGINX" prometheus prometheus-alertmanager node curl jq python3; do
  command -v "$b" >/dev/null || die "$b not found (run scripts/deps.sh)"
done

rm -rf "$D"
mkdir -p "$D"/{nginx/conf,nginx/logs,nginx/temp,prometheus/data,alertmanager/data,webhook,load}
chmod 755 "$D" "$D/nginx" "$D/nginx/logs" "$D/nginx/temp"
DEMO_T0="$(date +%s)"
echo "$$" > "$D/demo.pid"   # Ctrl-C from elsewhere: kill -INT "$(cat build/demo/demo.pid)"

# kept up for a person: DEMO_KEEP=1/0 decides, else whether a terminal is attached
if [ -n "${DEMO_KEEP:-}" ]; then
  [ "$DEMO_KEEP" != 0 ] && KEEP=1 || KEEP=0
elif [ -t 0 ] && [ -t 1 ]; then
  KEEP=1
else
  KEEP=0
fi

API_PORT="$(pick_port 8080)"
METRICS_PORT="$(pick_port 9145)"
PROM_PORT="$(pick_port 9090)"
AM_PORT="$(pick_port 9093)"
HOOK_PORT="$(pick_port 9099)"

# ------------------------------------------------------------------ upstream
if [ -n "${DEEPSEEK_API_KEY:-}" ]; then
  say "upstream: the real DeepSeek API (https://api.deepseek.com)"
  MODE=real
  # the key goes into an include file readable by root only; it is never printed
  umask 077
  printf 'proxy_set_header Authorization "Bearer %s";\n' "$DEEPSEEK_API_KEY" > "$D/nginx/conf/deepseek-api-key.conf"
  umask 022
  UPSTREAM_BLOCK="upstream deepseek_api { server api.deepseek.com:443; keepalive 16; }"
  PROXY="proxy_pass https://deepseek_api;
            proxy_set_header Host api.deepseek.com;
            proxy_ssl_server_name on;
            proxy_ssl_name api.deepseek.com;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;
            include $D/nginx/conf/deepseek-api-key.conf;"
else
  say "upstream: the mock DeepSeek API (t/mock/deepseek-mock.js; set DEEPSEEK_API_KEY for the real one)"
  MODE=mock
  node "$REPO/t/mock/deepseek-mock.js" --port 0 > "$D/mock.out" 2> "$D/mock.err" &
  started $! "mock DeepSeek upstream"
  MOCK_PID=$!
  for _ in $(seq 1 150); do grep -q '^LISTENING ' "$D/mock.out" 2>/dev/null && break; kill -0 "$MOCK_PID" || die "mock exited: $(cat "$D/mock.err")"; sleep 0.1; done
  MOCK_PORT="$(sed -n 's/^LISTENING \([0-9]*\).*/\1/p' "$D/mock.out" | head -1)"
  [ -n "$MOCK_PORT" ] || die "mock did not start"
  UPSTREAM_BLOCK="upstream deepseek_api { server 127.0.0.1:$MOCK_PORT; keepalive 16; }"
  PROXY="proxy_pass http://deepseek_api;"
fi

# ------------------------------------------------------------------ nginx
cat > "$D/nginx/conf/nginx.conf" <<EOF
# generated by scripts/demo.sh (see examples/nginx/production.conf for a deployment)
load_module $MODULE;
daemon off;
worker_processes 2;
pid $D/nginx/logs/nginx.pid;
error_log $D/nginx/logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log $D/nginx/logs/access.log;
    client_body_temp_path $D/nginx/temp/client_body;
    proxy_temp_path $D/nginx/temp/proxy;
    fastcgi_temp_path $D/nginx/temp/fastcgi;
    uwsgi_temp_path $D/nginx/temp/uwsgi;
    scgi_temp_path $D/nginx/temp/scgi;

    deepseek_metrics_zone deepseek:10m;
    # list prices per 1M tokens (DEEPSEEK-API.md, November 2026), peak / off-peak
    deepseek_metrics_price deepseek-flash  USD hit=0.006 miss=0.30 output=1.20 offpeak_hit=0.003 offpeak_miss=0.15 offpeak_output=0.60;
    deepseek_metrics_price deepseek-v4-pro USD hit=0.044 miss=1.32 output=3.96 offpeak_hit=0.022 offpeak_miss=0.66 offpeak_output=1.98;
    # DeepSeek's peak hours (Beijing time); off-peak prices apply outside them
    deepseek_metrics_peak_hours utc_offset=+08:00 days=mon-fri 09:00-12:00 14:00-18:00;

    $UPSTREAM_BLOCK

    server {
        listen 127.0.0.1:$API_PORT;
        client_max_body_size 32m;
        location / {
            deepseek_metrics deepseek;
            $PROXY
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            proxy_buffering off;
            proxy_read_timeout 900s;
        }
    }
    server {
        listen 127.0.0.1:$METRICS_PORT;
        access_log off;
        gzip on;
        gzip_types text/plain application/openmetrics-text;
        location = /metrics {
            deepseek_metrics_export;
            allow 127.0.0.1;
            deny all;
        }
    }
}
EOF
say "nginx with the module"
"$NGINX" -t -p "$D/nginx/" -c conf/nginx.conf -e "$D/nginx/logs/error.log" >/dev/null 2>"$D/nginx/logs/nginx-t.log" \
  || { cat "$D/nginx/logs/nginx-t.log" >&2; die "nginx -t failed"; }
"$NGINX" -p "$D/nginx/" -c conf/nginx.conf -e "$D/nginx/logs/error.log" >>"$D/nginx/logs/stderr.log" 2>&1 &
NGINX_PID=$!
started "$NGINX_PID" "nginx (master)"
wait_port "$METRICS_PORT" nginx "$NGINX_PID" "$D/nginx/logs/error.log"

# ------------------------------------------------------------------ webhook receiver
say "webhook receiver, Alertmanager, Prometheus"
node -e '
  const http = require("http"), fs = require("fs");
  const [port, file] = process.argv.slice(1);
  http.createServer((req, res) => {
    let b = ""; req.on("data", (c) => (b += c)); req.on("end", () => {
      if (req.method === "POST") {
        try { const j = JSON.parse(b);
          for (const a of j.alerts) fs.appendFileSync(file, `${new Date().toISOString()} ${j.receiver} ${a.status.toUpperCase()} ${a.labels.alertname} ${a.labels.severity || ""} ${a.annotations.description || ""}\n`);
        } catch (e) { fs.appendFileSync(file, b + "\n"); }
      }
      res.end("ok\n");
    });
  }).listen(+port, "127.0.0.1");
  process.on("SIGTERM", () => process.exit(0));
' "$HOOK_PORT" "$D/webhook/alerts.log" > "$D/webhook/webhook.log" 2>&1 &
HOOK_PID=$!
started "$HOOK_PID" "webhook receiver"
touch "$D/webhook/alerts.log"
wait_port "$HOOK_PORT" "webhook receiver" "$HOOK_PID" "$D/webhook/webhook.log"

# Alertmanager: the shipped example, webhook pointed at the local receiver,
# e-mail at a closed local port (deliveries to it fail and are logged), short waits.
sed -e "s|url: 'http://127.0.0.1:9099/alerts'|url: 'http://127.0.0.1:$HOOK_PORT/alerts'|" \
    -e "s|^\(\s*group_wait:\s*\).*|\15s|" -e "s|^\(\s*group_interval:\s*\).*|\110s|" \
    -e "s|^\(\s*smtp_smarthost:\s*\).*|\1'127.0.0.1:1'|" \
    "$REPO/alerting/alertmanager.yml" > "$D/alertmanager/alertmanager.yml"
prometheus-alertmanager --config.file="$D/alertmanager/alertmanager.yml" --storage.path="$D/alertmanager/data" \
  --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= >"$D/alertmanager/alertmanager.log" 2>&1 &
AM_PID=$!
started "$AM_PID" "Alertmanager"

# Prometheus: the shipped rules (optionally with shortened timings for the demo)
cp "$REPO/alerting/rules/deepseek-recording.yml" "$D/prometheus/"
if [ "${DEMO_FAST_ALERTS:-1}" = 1 ]; then
  sed -e 's/^\(\s*for:\s*\).*/\110s/' -e 's/\[5m\]/[1m]/g' -e 's/\[10m\]/[1m]/g' \
      "$REPO/alerting/rules/deepseek-alerts.yml" > "$D/prometheus/deepseek-alerts.yml"
else
  cp "$REPO/alerting/rules/deepseek-alerts.yml" "$D/prometheus/"
fi
cat > "$D/prometheus/prometheus.yml" <<EOF
# generated by scripts/demo.sh from examples/prometheus/prometheus.yml
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - deepseek-recording.yml
  - deepseek-alerts.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$AM_PORT']
scrape_configs:
  - job_name: 'deepseek-api'
    metrics_path: '/metrics'
    static_configs:
      - targets: ['127.0.0.1:$METRICS_PORT']
EOF
prometheus --config.file="$D/prometheus/prometheus.yml" --storage.tsdb.path="$D/prometheus/data" \
  --storage.tsdb.retention.time=30d --web.listen-address="127.0.0.1:$PROM_PORT" \
  --rules.alert.resend-delay=5s --log.level=warn >"$D/prometheus/prometheus.log" 2>&1 &
PROM_PID=$!
started "$PROM_PID" "Prometheus"
wait_http "http://127.0.0.1:$AM_PORT/-/ready" Alertmanager
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" Prometheus

API="http://127.0.0.1:$API_PORT"
PROM="http://127.0.0.1:$PROM_PORT"

# ------------------------------------------------------------------ demo load
req() { # req PATH BODY [X-Mock]
  local h=()
  [ -n "${3:-}" ] && h=(-H "X-Mock: $3")
  curl -s -o /dev/null --max-time 30 -H 'Content-Type: application/json' "${h[@]}" -d "$2" "$API$1" || true
}
chat() { # chat MODEL STREAM [X-Mock]
  req /chat/completions "{\"model\":\"$1\",\"stream\":$2,\"max_tokens\":32,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in five words.\"}]}" "${3:-}"
}
# the balance, read through nginx as a cron job would: the mock's account
# spends 0.05 CNY a second, so the runway forecast has a slope
balance() {
  local total
  total="$(awk -v s="$(( $(date +%s) - DEMO_T0 ))" 'BEGIN { t = 110 - 0.05 * s; if (t < 0) t = 0; printf "%.2f", t }')"
  curl -s -o /dev/null -H "X-Mock: balance_total=$total;balance_granted=10.00;balance_topped_up=$total" "$API/user/balance" || true
}
load_worker() { # mock only: bounded by DEMO_SECONDS (or $1)
  local end=$((SECONDS + ${1:-$DEMO_SECONDS})) i=0
  while [ "$SECONDS" -lt "$end" ]; do
    i=$((i + 1))
    case $((i % 25)) in
      0) chat deepseek-flash false 'status=500' ;;
      1) chat deepseek-flash false 'status=429' ;;
      2) chat deepseek-v4-pro true 'keepalive_ms=800;chunks=8;delay_ms=50' ;;
      3) chat deepseek-reasoner true 'chunks=6;delay_ms=30' ;;
      4) chat deepseek-flash true 'truncate_events=2' ;;
      5) curl -s -o /dev/null "$API/models" ;;
      6) balance ;;
      7) req /beta/completions '{"model":"deepseek-flash","prompt":"def add(a, b):","suffix":"    return c"}' ;;
      8) chat deepseek-flash false 'hit=900;miss=100;completion=120' ;;
      9) chat deepseek-v4-pro false 'status=503' ;;
      10) chat deepseek-flash true 'finish=content_filter' ;;
      11) chat deepseek-flash false 'gzip=1' ;;
      12) req /anthropic/v1/messages '{"model":"deepseek-flash","max_tokens":32,"messages":[{"role":"user","content":"hi"}]}' ;;
      13) if [ "${w:-}" = 3 ]; then   # one client: a 12 s stall mid-stream, with keep-alives
            chat deepseek-flash true 'pause_after=2;pause_ms=12000;pause_keepalives=1;keepalive_every_ms=2000'
          else chat deepseek-flash true 'chunks=4'; fi ;;
      1[4-9]) chat deepseek-flash true "chunks=4;delay_ms=$((RANDOM % 40))" ;;
      *) chat deepseek-flash false ;;
    esac
  done
}
if [ "$MODE" = mock ]; then
  say "demo load: mixed streaming / non-streaming / errors through nginx for ${DEMO_SECONDS}s (3 clients)"
  LOAD_PIDS=()
  for w in 1 2 3; do load_worker > "$D/load/worker$w.log" 2>&1 & LOAD_PIDS+=($!); started "${LOAD_PIDS[-1]}" "load client $w"; done
  for p in "${LOAD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
else
  say "demo load: a few tiny requests to the real API (max_tokens 32)"
  curl -s -o /dev/null "$API/models"; curl -s -o /dev/null "$API/user/balance"
  chat deepseek-flash false; chat deepseek-flash true; chat deepseek-flash true
  sleep "$(( DEMO_SECONDS < 15 ? DEMO_SECONDS : 15 ))"
fi
sleep 7   # one more scrape and rule evaluation
# an alert firing but not delivered yet: give Alertmanager a moment (bounded)
for _ in $(seq 1 30); do
  [ -s "$D/webhook/alerts.log" ] && break
  curl -s --get "$PROM/api/v1/query" --data-urlencode 'query=ALERTS{alertstate="firing",severity="critical"}' \
    | jq -e '.data.result | length > 0' >/dev/null 2>&1 || break
  sleep 1
done

# ------------------------------------------------------------------ results
q() { curl -s --get "$PROM/api/v1/query" --data-urlencode "query=$1"; }
show() { # show TITLE QUERY JQ-FORMAT
  printf '\n  %s\n    %s\n' "$1" "$2"
  q "$2" | jq -r ".data.result[] | $3" 2>/dev/null | sed 's/^/      /' | head -n 12
}
say "live results from Prometheus"
show "requests by endpoint and status (since start)" \
  'sum by (endpoint, status) (deepseek_requests_total)' '"\(.metric.endpoint) \(.metric.status): \(.value[1])"'
show "error rate, the article's query" \
  'sum(rate(deepseek_requests_total{status="500"}[5m])) / sum(rate(deepseek_requests_total[5m]))' '"\(.value[1])"'
show "p99 latency (s), the article's query" \
  'histogram_quantile(0.99, sum(rate(deepseek_request_latency_seconds_bucket[5m])) by (le))' '"\(.value[1])"'
show "time to first token p90 (s) by model" \
  'histogram_quantile(0.9, sum by (model, le) (rate(deepseek_time_to_first_token_seconds_bucket[5m])))' '"\(.metric.model): \(.value[1])"'
show "tokens by type" 'sum by (type) (deepseek_tokens_total)' '"\(.metric.type): \(.value[1])"'
show "cost by model" 'sum by (model, currency) (deepseek_cost_total)' '"\(.metric.model) \(.metric.currency): \(.value[1])"'
show "balance (the last GET /user/balance through nginx)" 'deepseek_balance' '"\(.metric.currency) \(.metric.type): \(.value[1])"'
show "errors by reason" 'sum by (reason) (deepseek_errors_total)' '"\(.metric.reason): \(.value[1])"'
show "alerts (Prometheus)" 'ALERTS' '"\(.metric.alertname) \(.metric.alertstate) severity=\(.metric.severity)"'
printf '\n  notifications received by the webhook (%s):\n' "$D/webhook/alerts.log"
sed 's/^/      /' "$D/webhook/alerts.log" | head -n 10
[ -s "$D/webhook/alerts.log" ] || echo "      (none yet)"

cat <<EOF

$(say "where to look")
  DeepSeek API through nginx  $API   (OpenAI base URL; e.g. curl $API/models)
  metrics (the module)        http://127.0.0.1:$METRICS_PORT/metrics
  Prometheus                  $PROM   (try: rate(deepseek_requests_total[1m]))
  Alertmanager                http://127.0.0.1:$AM_PORT
  status page (a browser)     http://127.0.0.1:$METRICS_PORT/metrics   (the same URL: browsers get the page, scrapers the metrics)
  Grafana                     import dashboards/deepseek.json, data source Prometheus at $PROM
  configs, data and logs      $D/
EOF

if [ "$KEEP" = 1 ]; then
  if [ "$MODE" = mock ]; then
    # one slow client keeps the numbers moving, bounded by DEMO_KEEP_SECONDS
    # (timeout's PID: a TERM to it reaches the loop too)
    timeout "${DEMO_KEEP_SECONDS:-3600}" bash -c "$(declare -f req chat balance load_worker); API='$API'; DEMO_T0=$DEMO_T0; w=3
      while :; do load_worker 5; sleep 1; done" > "$D/load/keep.log" 2>&1 &
    started $! "light load while kept up"
  fi
  say "running until Ctrl-C (nginx, mock, Prometheus and Alertmanager stay up; stop: Ctrl-C or kill -INT $$)"
  while kill -0 "$NGINX_PID" 2>/dev/null; do sleep 1; done
else
  echo "    (no terminal: stopping now; DEMO_KEEP=1 keeps it up)"
fi
