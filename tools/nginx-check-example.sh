#!/usr/bin/env bash
# Run `nginx -t` on an example nginx configuration, offline and without
# touching the system's nginx, with the module from this repository loaded.
#
#   tools/nginx-check-example.sh examples/nginx/production.conf
#   DSM_MODULE=/path/to/module.so NGINX=/usr/sbin/nginx tools/nginx-check-example.sh CONF
#
# The example is copied into a private prefix (mktemp -d) and only these
# substitutions are made in the copy:
#   - `load_module modules/ngx_http_deepseek_metrics_module.so` -> the built module
#     (build/modules/...; DSM_MODULE overrides)
#   - api.deepseek.com in `proxy_pass` and upstream `server` lines -> 127.0.0.1
#     (nginx resolves upstream names at start: the real name needs DNS; SNI names,
#     Host headers etc. are kept)
#   - /var/log/nginx/, /run/nginx.pid -> the prefix; every *_temp_path -> the prefix
#   - `include .../deepseek-api-key.conf` -> a copy of examples/nginx/deepseek-api-key.conf.example
# Everything else is checked as shipped. Exit status and output are nginx's.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF="${1:?usage: nginx-check-example.sh CONF}"
NGINX="${NGINX:-/usr/sbin/nginx}"
MODULE="${DSM_MODULE-$REPO/build/modules/ngx_http_deepseek_metrics_module.so}"
[ -f "$CONF" ] || { echo "no such file: $CONF" >&2; exit 2; }
if [ -n "$MODULE" ] && [ ! -f "$MODULE" ]; then echo "module not built: $MODULE (scripts/build.sh)" >&2; exit 2; fi

TMP="$(mktemp -d /tmp/dsm-example.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/logs" "$TMP/temp" "$TMP/conf"
chmod 755 "$TMP"
SRC_DIR="$(cd "$(dirname "$CONF")" && pwd)"
cp -a "$SRC_DIR"/. "$TMP/conf/"
cp "$REPO/examples/nginx/deepseek-api-key.conf.example" "$TMP/conf/deepseek-api-key.conf"
OUT="$TMP/conf/$(basename "$CONF")"

if [ -n "$MODULE" ]; then
  LOAD="load_module $MODULE;"
else
  LOAD="" # static build
fi
LOAD="$LOAD" TMPD="$TMP" perl -0pi -e '
  my $load = $ENV{LOAD}; my $tmp = $ENV{TMPD}; my $txt = $_;
  s{^\s*load_module\s+\S*ngx_http_deepseek_metrics_module\.so\s*;}{$load}m;
  s{^(\s*proxy_pass\s+https?://)api\.deepseek\.com}{${1}127.0.0.1}mg;
  s{^(\s*server\s+)api\.deepseek\.com}{${1}127.0.0.1}mg;
  s{/var/log/nginx/}{$tmp/logs/}g;
  s{/run/nginx\.pid}{$tmp/logs/nginx.pid}g;
  s{include\s+\S*deepseek-api-key\.conf}{include $tmp/conf/deepseek-api-key.conf}g;
  my $ins = join "", map { "    ${_}_temp_path $tmp/temp/$_;\n" }
                     grep { my $n = $_; $txt !~ /^\s*${n}_temp_path\s/m } qw(client_body proxy fastcgi uwsgi scgi);
  s{^(\s*http\s*\{[^\n]*\n)}{$1$ins}m;
' "$OUT"

"$NGINX" -t -p "$TMP/" -e "$TMP/logs/error.log" -c "$OUT"
