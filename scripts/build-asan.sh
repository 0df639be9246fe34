#!/usr/bin/env bash
# Build a full nginx 1.22.1 (Debian's source package) with clang + ASan + UBSan
# and this module compiled in statically (--add-module), with --with-debug.
#
#   scripts/build-asan.sh                 # -> build/asan/sbin/nginx
#   MODULE_DIR=/tmp/stub scripts/build-asan.sh   # other module dir -> build/asan-<hash>/sbin/nginx
#   FORCE=1 scripts/build-asan.sh         # re-copy source and re-configure
#
# Steps (each skipped when already done):
#  1. fetch the source once into build/nginx-src/ with `apt-get source nginx`,
#     using a private deb-src list derived from /etc/apt/sources.list.d/*.sources
#     (and /etc/apt/sources.list); /etc/apt and the system lists stay untouched.
#     Versions from `apt-cache showsrc nginx` are tried newest first (a .dsc may 404).
#  2. copy the pristine source to build/asan/src and configure it there
#     (again only when the module's `config`, the flags or the module dir changed).
#  3. `make` in the configured tree: after module source changes only the module
#     objects are recompiled and nginx relinked.
# The binary is build/asan/src/objs/nginx; build/asan/sbin/nginx is a symlink to it.
# Running it: ASAN_OPTIONS is up to the caller (the test harness sets sane defaults).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE_DIR="$(cd "${MODULE_DIR:-$REPO}" && pwd)"
BUILD="$REPO/build"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
CC="${ASAN_CC:-clang}"
SRCCACHE="$BUILD/nginx-src"
APTDIR="$BUILD/apt-src"

OUTDIR="$BUILD/asan"
if [ "$MODULE_DIR" != "$REPO" ]; then
  OUTDIR="$BUILD/asan-$(printf '%s' "$MODULE_DIR" | md5sum | cut -c1-8)"
fi
TREE="$OUTDIR/src"

log() { echo "build-asan.sh: $*"; }

fetch_source() {
  if [ -f "$SRCCACHE/.dsm-fetched" ] && [ -d "$(cat "$SRCCACHE/.dsm-fetched")" ]; then
    return 0
  fi
  command -v dpkg-source >/dev/null || { echo "build-asan.sh: dpkg-source missing (apt-get install dpkg-dev)" >&2; exit 1; }
  rm -rf "$APTDIR"
  mkdir -p "$APTDIR/sources.list.d" "$APTDIR/lists/partial"
  local n=0 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb-src/' "$f" > "$APTDIR/sources.list.d/src-$(basename "$f")"
    n=$((n + 1))
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -nE 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' "$f" > "$APTDIR/sources.list.d/src-$(basename "$f")"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "build-asan.sh: no apt sources found in /etc/apt" >&2; exit 1; }
  local APTOPTS=(-o Dir::Etc::sourcelist=/dev/null
                 -o Dir::Etc::sourceparts="$APTDIR/sources.list.d"
                 -o Dir::State::lists="$APTDIR/lists"
                 -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
                 -o APT::Sandbox::User=root)
  log "apt-get update (private deb-src lists in $APTDIR)"
  apt-get "${APTOPTS[@]}" -qq update
  local versions v tmp
  versions="$(apt-cache "${APTOPTS[@]}" showsrc nginx | awk '/^Package: /{p=$2} /^Version: /{if (p=="nginx") print $2}' | sort -u -V -r)"
  [ -n "$versions" ] || { echo "build-asan.sh: apt-cache showsrc nginx found nothing" >&2; exit 1; }
  for v in $versions; do
    tmp="$BUILD/nginx-src.tmp"
    rm -rf "$tmp"; mkdir -p "$tmp"
    log "trying apt-get source nginx=$v"
    if ( cd "$tmp" && apt-get "${APTOPTS[@]}" -qq source "nginx=$v" ) >"$BUILD/apt-source.log" 2>&1; then
      local d
      d="$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'nginx-*' | head -1)"
      if [ -n "$d" ] && [ -f "$d/auto/configure" -o -f "$d/configure" ]; then
        rm -rf "$SRCCACHE"
        mv "$tmp" "$SRCCACHE"
        d="$SRCCACHE/$(basename "$d")"
        printf '%s' "$d" > "$SRCCACHE/.dsm-fetched"
        log "source nginx $v in $d"
        return 0
      fi
    fi
    log "nginx=$v failed: $(tail -n 2 "$BUILD/apt-source.log" | tr '\n' ' ')"
  done
  rm -rf "$BUILD/nginx-src.tmp"
  echo "build-asan.sh: no nginx source version could be downloaded" >&2
  exit 1
}

[ -f "$MODULE_DIR/config" ] || { echo "build-asan.sh: $MODULE_DIR/config missing (no module sources yet?)" >&2; exit 1; }
mkdir -p "$BUILD"
fetch_source
SRC="$(cat "$SRCCACHE/.dsm-fetched")"

# Stock nginx 1.22.1 calls memcpy(dst, NULL, 0) at startup (ngx_pstrdup() of an
# empty -g) and in proxy_create_request: nonnull-attribute is off for nginx's own
# objects and on for the module's (added to their rules in objs/Makefile below).
# A suppression by name would not do: matching it makes the master start
# llvm-symbolizer, whose pipes every worker then inherits and shares, so two
# workers symbolizing at once (LeakSanitizer at exit) can wait on each other forever.
SAN="-fsanitize=address,undefined -fno-sanitize=nonnull-attribute"
MODULE_SAN="-fsanitize=nonnull-attribute"
CONF_ARGS=(
  --with-cc="$CC"
  --with-cc-opt="-O1 -g $SAN -fno-omit-frame-pointer -DNGX_DEBUG_PALLOC=1"
  --with-ld-opt="-fsanitize=address,undefined"
  --prefix="$OUTDIR"
  --error-log-path=stderr
  --with-debug --with-compat --with-threads --with-pcre-jit
  --with-http_ssl_module --with-http_v2_module --with-http_stub_status_module
  --with-http_realip_module --with-http_auth_request_module --with-http_gzip_static_module
  --with-http_gunzip_module --with-http_dav_module --with-http_slice_module
  --add-module="$MODULE_DIR"
)
STAMP_WANT="$(printf '%s\n' "$SRC" "${CONF_ARGS[@]}" "$MODULE_SAN"; sha256sum "$MODULE_DIR/config" | cut -d' ' -f1; $CC --version 2>/dev/null | head -1)"
STAMP="$TREE/.dsm-configured"

if [ -n "${FORCE:-}" ] || [ ! -f "$TREE/objs/Makefile" ] || [ ! -f "$STAMP" ] \
   || [ "$(cat "$STAMP")" != "$STAMP_WANT" ]; then
  log "configuring $TREE"
  rm -rf "$TREE"
  mkdir -p "$OUTDIR"
  cp -a "$SRC" "$TREE"
  ( cd "$TREE" && ./configure "${CONF_ARGS[@]}" > "$TREE/configure.log" 2>&1 ) || {
    echo "build-asan.sh: configure failed; tail of $TREE/configure.log:" >&2
    tail -n 30 "$TREE/configure.log" >&2
    exit 1
  }
  # every check, nonnull-attribute included, for the module's own objects
  perl -0pi -e 's{(\$\(CC\) -c \$\(CFLAGS\))(\s+\$\(ALL_INCS\) \\\n\s+-o objs/addon/[^/]+/ngx_http_deepseek_metrics_)}{$1 '"$MODULE_SAN"'$2}g' "$TREE/objs/Makefile"
  n=$(grep -c -- "(CFLAGS) $MODULE_SAN" "$TREE/objs/Makefile" || true)
  nsrc=$(grep -c 'ngx_http_deepseek_metrics_[a-z]*\.c' "$MODULE_DIR/config" || true)
  if [ "$n" != "$nsrc" ]; then
    echo "build-asan.sh: $MODULE_SAN added to $n module objects, expected $nsrc" >&2
    exit 1
  fi
  printf '%s' "$STAMP_WANT" > "$STAMP"
fi

# full compiler output goes to $OUTDIR/make.log (VERBOSE=1: to the terminal);
# on failure the errors and the tail of the log are printed
start=$(date +%s)
if [ -n "${VERBOSE:-}" ]; then
  make -C "$TREE" -f objs/Makefile -j"$JOBS" binary
else
  log "make (output in $OUTDIR/make.log)"
  if ! make -C "$TREE" -f objs/Makefile -j"$JOBS" binary > "$OUTDIR/make.log" 2>&1; then
    echo "build-asan.sh: build FAILED; errors:" >&2
    grep -E 'error|warning:|Error [0-9]' "$OUTDIR/make.log" | head -n 40 >&2 || true
    echo "--- tail of $OUTDIR/make.log:" >&2
    tail -n 25 "$OUTDIR/make.log" >&2
    exit 1
  fi
fi
log "make done in $(( $(date +%s) - start ))s"
mkdir -p "$OUTDIR/sbin"
ln -sfn ../src/objs/nginx "$OUTDIR/sbin/nginx"
log "$OUTDIR/sbin/nginx ($("$OUTDIR/sbin/nginx" -v 2>&1))"
