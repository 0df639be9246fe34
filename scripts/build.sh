#!/usr/bin/env bash
# Build ngx_http_deepseek_metrics_module as a dynamic module against Debian's
# nginx-dev tree (/usr/share/nginx/src, nginx 1.22.1), for /usr/sbin/nginx.
#
#   scripts/build.sh               # gcc (default), output build/modules/ngx_http_deepseek_metrics_module.so
#   CC=clang scripts/build.sh      # clang (configure --with-cc=clang), separate tree
#   MODULE_DIR=/tmp/stub scripts/build.sh   # build another module dir (tests of this script)
#   FORCE=1 scripts/build.sh       # re-copy and re-configure
#
# Trees: build/nginx-dev (gcc) and build/nginx-dev-clang (clang). The tree is
# copied and configured only on first use or when the module's `config`, the
# compiler or the module dir changed (a stamp file records that); otherwise
# this is just `make -f objs/Makefile modules`, which recompiles only changed
# objects. nginx builds with -Werror: warnings fail the build.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE_DIR="$(cd "${MODULE_DIR:-$REPO}" && pwd)"
SRC=/usr/share/nginx/src
CC="${CC:-gcc}"
BUILD="$REPO/build"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

case "$(basename "$CC")" in
  clang*) TREE="$BUILD/nginx-dev-clang" ; CCOPT=(--with-cc="$CC") ;;
  gcc*|cc) TREE="$BUILD/nginx-dev" ; CCOPT=() ; [ "$CC" = gcc ] || CCOPT=(--with-cc="$CC") ;;
  *) TREE="$BUILD/nginx-dev-$(basename "$CC")" ; CCOPT=(--with-cc="$CC") ;;
esac
# a non-default module dir gets its own tree so the real one is not disturbed
if [ "$MODULE_DIR" != "$REPO" ]; then
  TREE="$TREE-$(printf '%s' "$MODULE_DIR" | md5sum | cut -c1-8)"
fi

if [ ! -f "$SRC/configure" ]; then
  echo "build.sh: $SRC/configure missing: install nginx-dev (scripts/deps.sh)" >&2
  exit 1
fi
if [ ! -f "$MODULE_DIR/config" ]; then
  echo "build.sh: $MODULE_DIR/config missing (no module sources yet?)" >&2
  exit 1
fi

CONF_ARGS=(--with-compat "${CCOPT[@]}" --add-dynamic-module="$MODULE_DIR")
STAMP_WANT="$(printf '%s\n' "${CONF_ARGS[@]}"; sha256sum "$MODULE_DIR/config" | cut -d' ' -f1; $CC --version 2>/dev/null | head -1)"
STAMP="$TREE/.dsm-configured"

if [ -n "${FORCE:-}" ] || [ ! -f "$TREE/objs/Makefile" ] || [ ! -f "$STAMP" ] \
   || [ "$(cat "$STAMP")" != "$STAMP_WANT" ]; then
  echo "build.sh: configuring $TREE (${CONF_ARGS[*]})"
  rm -rf "$TREE"
  mkdir -p "$BUILD"
  cp -a "$SRC" "$TREE"
  ( cd "$TREE" && ./configure "${CONF_ARGS[@]}" > "$TREE/configure.log" 2>&1 ) || {
    echo "build.sh: configure failed; tail of $TREE/configure.log:" >&2
    tail -n 30 "$TREE/configure.log" >&2
    exit 1
  }
  printf '%s' "$STAMP_WANT" > "$STAMP"
fi

make -C "$TREE" -f objs/Makefile -j"$JOBS" modules

SO_NAME=""
for f in "$TREE"/objs/*.so; do
  [ -e "$f" ] || continue
  SO_NAME="$f"
  if [ "$(basename "$f")" = ngx_http_deepseek_metrics_module.so ]; then break; fi
done
if [ -z "$SO_NAME" ]; then
  echo "build.sh: no .so produced in $TREE/objs" >&2
  exit 1
fi
mkdir -p "$BUILD/modules"
if [ "$MODULE_DIR" = "$REPO" ] && [ "$TREE" = "$BUILD/nginx-dev" ]; then
  OUT="$BUILD/modules/ngx_http_deepseek_metrics_module.so"
elif [ "$MODULE_DIR" = "$REPO" ]; then
  # another compiler's build does not replace the gcc one the tests and
  # benchmarks load
  mkdir -p "$BUILD/modules/$(basename "$TREE")"
  OUT="$BUILD/modules/$(basename "$TREE")/ngx_http_deepseek_metrics_module.so"
else
  OUT="$BUILD/modules/$(basename "$SO_NAME")"
fi
cp "$SO_NAME" "$OUT.tmp.$$" && mv -f "$OUT.tmp.$$" "$OUT"
echo "build.sh: $OUT (from $SO_NAME, CC=$CC)"
