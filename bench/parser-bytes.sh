#!/bin/sh
# Instructions per body byte of the response body parser, measured with
# callgrind (deterministic) on generated bodies: a realistic DeepSeek SSE
# stream (thousands of small chunk events, reasoning_content then content)
# and a JSON body with a long content string.  Only instructions executed
# inside ngx_http_dsm_parse() (and what it calls, e.g. memchr)
# are counted.
#
#   bench/parser-bytes.sh [MBYTES [BUFSIZE]]     (default 8 MB, 8192)
#
# The parser is compiled with gcc at nginx's default optimisation (-O);
# BENCH_CC=clang and/or BENCH_OPT=-O2 select another build.  The bodies
# come from t/parser/bench.c (deterministic generator): the SSE stream is
# ~28000 chunk events of ~300 bytes (id, object, created, model,
# system_fingerprint, choices[index, delta, logprobs, finish_reason],
# usage:null), reasoning_content for the first third, then content.

set -e

root=$(cd "$(dirname "$0")/.." && pwd)
mb=${1:-8}
bufsize=${2:-8192}
out=$root/build/parser

command -v valgrind >/dev/null 2>&1 \
    || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }

"$root/t/parser/build.sh" bench

for kind in sse json; do
    cg=$out/callgrind.$kind.out
    info=$(valgrind --tool=callgrind --callgrind-out-file="$cg" \
               --toggle-collect=ngx_http_dsm_parse \
               "$out/bench" $kind "$mb" "$bufsize" 2>/dev/null)
    bytes=$(echo "$info" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$cg")
    [ -n "$ir" ] || ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$cg")
    echo "$kind: $info"
    awk -v k="$kind" -v ir="$ir" -v b="$bytes" 'BEGIN {
        printf "%s: %d instructions / %d bytes = %.3f instructions/byte\n",
               k, ir, b, ir / b }'
done

# a realistic small non-streaming response and a 30-event stream, each
# parsed whole 1000 times

for fx in "$root/bench/fixtures/chat.json" "$root/bench/fixtures/chat-stream.sse"
do
    name=$(basename "$fx")
    cg=$out/callgrind.file.out
    info=$(valgrind --tool=callgrind --callgrind-out-file="$cg" \
               --toggle-collect=ngx_http_dsm_parse \
               "$out/bench" file "$fx" 1000 2>/dev/null)
    bytes=$(echo "$info" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$cg")
    [ -n "$ir" ] || ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$cg")
    echo "$name: $info"
    awk -v n="$name" -v ir="$ir" -v b="$bytes" 'BEGIN {
        printf "%s: %d instructions / body = %.3f instructions/byte\n",
               n, ir / 1000, ir / 1000 / b }'
done
