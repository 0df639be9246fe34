#!/bin/sh
# Builds the balance scanner's libFuzzer harness (fuzz/balance_fuzzer.c) into
# build/fuzz/balance-fuzzer (clang, ASan + UBSan), with nginx's headers from
# t/parser/nginx-headers.sh, and seeds build/fuzz/balance-corpus.
#
#   fuzz/balance-build.sh
#   build/fuzz/balance-fuzzer -max_total_time=60 build/fuzz/balance-corpus

set -e

root=$(cd "$(dirname "$0")/.." && pwd)
inc=$("$root/t/parser/nginx-headers.sh")
ngx=$root/build/parser-nginx
mod=$root/ngx_http_deepseek_metrics_module
out=$root/build/fuzz

mkdir -p "$out/balance-corpus"

clang -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined \
    -W -Wall -Wextra -Wno-unused-parameter -Werror \
    $inc -I"$ngx/src/http" -I"$ngx/src/http/modules" -I"$mod" \
    "$root/fuzz/balance_fuzzer.c" "$mod/ngx_http_deepseek_metrics_balance.c" \
    -o "$out/balance-fuzzer"

c=$out/balance-corpus
printf '%s' '{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"}]}' > "$c/deepseek"
printf '%s' '{"is_available":false,"balance_infos":[{"currency":"USD","total_balance":-1.5,"granted_balance":"0","topped_up_balance":"-1.5"},{"currency":"CNY","total_balance":"1.234567891","granted_balance":"0","topped_up_balance":"1"}],"x":[1,{"a":null}]}' > "$c/two"
printf '%s' '{"is_available":true,"balance_infos":[]}' > "$c/empty"
echo "built $out/balance-fuzzer"
