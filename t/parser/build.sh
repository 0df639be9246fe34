#!/bin/sh
# Builds the parser unit driver (and, with clang, sanitizer and libFuzzer
# builds) into build/parser/.  Each variant is also a -Werror compile of
# the parser with nginx's warning flags.
#
#   t/parser/build.sh [gcc|clang|asan|fuzz|bench|all]   (default: all)

set -e

root=$(cd "$(dirname "$0")/../.." && pwd)
inc=$("$root/t/parser/nginx-headers.sh")
out=$root/build/parser
mod=$root/ngx_http_deepseek_metrics_module
src="$mod/ngx_http_deepseek_metrics_parse.c"
inc="$inc -I$mod -I$root/t/parser"

mkdir -p "$out"

gccflags="-pipe -W -Wall -Wpointer-arith -Wno-unused-parameter -Werror -g"
clangflags="-pipe -W -Wall -Wextra -Wpointer-arith \
    -Wconditional-uninitialized -Wno-unused-parameter -Werror -g"

have_clang() { command -v clang >/dev/null 2>&1; }

build() {
    case $1 in
    gcc)
        gcc $gccflags -O2 $inc -c "$src" -o "$out/parse-gcc.o"
        gcc $gccflags -O2 $inc "$root/t/parser/driver.c" "$out/parse-gcc.o" \
            -o "$out/driver-gcc"
        ;;
    clang)
        have_clang || return 0
        clang $clangflags -O2 $inc -c "$src" -o "$out/parse-clang.o"
        clang $clangflags -O2 $inc "$root/t/parser/driver.c" \
            "$out/parse-clang.o" -o "$out/driver-clang"
        ;;
    asan)
        have_clang || return 0
        clang $clangflags -O1 -fno-omit-frame-pointer \
            -fsanitize=address,undefined -fno-sanitize-recover=all \
            $inc "$src" "$root/t/parser/driver.c" -o "$out/driver-asan"
        ;;
    fuzz)
        have_clang || return 0
        clang $clangflags -O1 -fno-omit-frame-pointer \
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
            $inc "$src" "$root/fuzz/parse_fuzzer.c" -o "$out/parse-fuzzer"
        ;;
    bench)
        ${BENCH_CC:-gcc} $gccflags -gdwarf-4 ${BENCH_OPT:--O} $inc "$src" "$root/t/parser/bench.c" \
            -o "$out/bench"
        ;;
    esac
}

if [ $# -eq 0 ] || [ "$1" = all ]; then
    set -- gcc clang asan fuzz bench
fi

for v in "$@"; do
    build "$v"
done
