#!/bin/sh
# Prepares nginx headers (with objs/ngx_auto_config.h) for building the
# parser standalone and prints the -I flags.  Uses the Debian nginx-dev
# tree (/usr/share/nginx/src) copied to build/parser-nginx; any nginx source
# tree can be given in NGX_SRC instead.  Idempotent.

set -e

root=$(cd "$(dirname "$0")/../.." && pwd)
src=${NGX_SRC:-/usr/share/nginx/src}
dst=$root/build/parser-nginx

if [ ! -f "$dst/objs/ngx_auto_config.h" ]; then
    if [ ! -f "$src/src/core/ngx_core.h" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "nginx-headers.sh: installing nginx-dev" >&2
            apt-get install -y nginx-dev >&2 \
                || { apt-get update >&2 && apt-get install -y nginx-dev >&2; }
        fi
    fi

    if [ ! -f "$src/src/core/ngx_core.h" ]; then
        echo "nginx-headers.sh: no nginx source tree at $src" \
             "(apt-get install nginx-dev, or set NGX_SRC)" >&2
        exit 1
    fi

    rm -rf "$dst.tmp"
    mkdir -p "$dst.tmp"
    cp -R "$src/." "$dst.tmp/"

    (cd "$dst.tmp" && ./configure --with-compat >configure.log 2>&1) \
    || (cd "$dst.tmp" && ./configure --with-compat --without-pcre \
            --without-http_rewrite_module --without-http_gzip_module \
            >configure.log 2>&1) \
    || { cat "$dst.tmp/configure.log" >&2; exit 1; }

    rm -rf "$dst"
    mv "$dst.tmp" "$dst"
fi

echo "-I$dst/src/core -I$dst/src/event -I$dst/src/os/unix -I$dst/objs"
