#!/usr/bin/env bash
# Build the Debian package libnginx-mod-http-deepseek-metrics for Debian's own
# nginx (make deb), with Debian's tooling: dpkg-buildpackage + debhelper +
# dh-sequence-nginx from nginx-dev, exactly as Debian builds its libnginx-mod-*.
#
#   scripts/deb.sh      # -> build/deb/libnginx-mod-http-deepseek-metrics_<version>_<arch>.deb
#
# The source tree is not touched: the files the package needs (config, module
# sources, debian/, docs, examples) are copied to build/deb/src and built there;
# dpkg-buildpackage writes the .deb (and .buildinfo/.changes, a -dbgsym .deb)
# next to it in build/deb/. The version comes from one place, the module's
# NGX_HTTP_DSM_VERSION macro, written into a generated debian/changelog (native
# package: no Debian revision). The build fails unless the package's
# Depends: nginx-abi-... is the one the installed nginx Provides.
# Log: build/deb/build.log. JOBS=N for the compile (default: nproc).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/build/deb"
SRC="$OUT/src"
PKG=libnginx-mod-http-deepseek-metrics
HDR="$REPO/ngx_http_deepseek_metrics_module/ngx_http_deepseek_metrics.h"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

die() { echo "deb.sh: $*" >&2; exit 1; }

for tool in dpkg-buildpackage dh dh_nginx dpkg-deb; do
  command -v "$tool" >/dev/null \
    || die "$tool missing: install debhelper, dpkg-dev and nginx-dev (scripts/deps.sh)"
done
ABIFILE=/usr/share/nginx/src/debian/libnginx-mod.abisubstvars
[ -f "$ABIFILE" ] || die "$ABIFILE missing: install nginx-dev (scripts/deps.sh)"

VERSION="$(sed -n 's/^#define NGX_HTTP_DSM_VERSION  *"\([^"]*\)".*/\1/p' "$HDR")"
[[ "$VERSION" =~ ^[0-9][0-9A-Za-z.+~]*$ ]] \
  || die "no usable NGX_HTTP_DSM_VERSION in $HDR (got '$VERSION')"
ARCH="$(dpkg --print-architecture)"
DEB="$OUT/${PKG}_${VERSION}_${ARCH}.deb"

# the nginx-abi-... the installed nginx provides (dh_nginx takes nginx-dev's)
WANT_ABI="$(dpkg-query -W -f='${db:Status-Status} ${Provides}\n' 2>/dev/null \
            | sed -n 's/^installed //p' | tr ',' '\n' \
            | sed -n 's/^ *\(nginx-abi-[^ ]*\).*/\1/p' | sort -u)"
[ "$(printf '%s\n' "$WANT_ABI" | grep -c .)" = 1 ] \
  || die "expected one nginx-abi-* provided by the installed nginx, got: '${WANT_ABI//$'\n'/ }'"

rm -rf "$OUT"
mkdir -p "$SRC" "$SRC/dashboards"
cp -a "$REPO/config" "$REPO/ngx_http_deepseek_metrics_module" "$REPO/debian" \
      "$REPO/README.md" "$REPO/docs" "$REPO/examples" "$REPO/alerting" "$SRC/"
cp -a "$REPO/dashboards/README.md" "$REPO/dashboards/deepseek.json" "$SRC/dashboards/"

# reproducible: file dates and the changelog date from the last commit
if SDE="$(git -C "$REPO" log -1 --format=%ct 2>/dev/null)" && [ -n "$SDE" ]; then
  REV="$(git -C "$REPO" rev-parse --short HEAD)"
  [ -z "$(git -C "$REPO" status --porcelain -- config ngx_http_deepseek_metrics_module \
          debian docs examples alerting dashboards README.md 2>/dev/null)" ] \
    || REV="$REV with local changes"
else
  SDE="$(stat -c %Y "$HDR")"
  REV="a source tree without git"
fi
export SOURCE_DATE_EPOCH="$SDE"
cat > "$SRC/debian/changelog" <<EOF
$PKG ($VERSION) unstable; urgency=medium

  * ngx_http_deepseek_metrics_module $VERSION, built from $REV
    for Debian's nginx ($WANT_ABI).

 -- ngx_http_deepseek_metrics_module maintainers <maintainers@users.noreply.r-seed-84e468c7.example>  $(date -u -R -d "@$SDE")
EOF

echo "deb.sh: building $PKG $VERSION for $ARCH in $SRC (log: $OUT/build.log)"
start=$(date +%s)
if ! ( cd "$SRC" && dpkg-buildpackage -b -us -uc -J"$JOBS" ) > "$OUT/build.log" 2>&1; then
  tail -n 40 "$OUT/build.log" >&2
  die "dpkg-buildpackage failed (full log: $OUT/build.log)"
fi
[ -f "$DEB" ] || die "dpkg-buildpackage did not produce $DEB"

DEPENDS="$(dpkg-deb -f "$DEB" Depends)"
GOT_ABI="$(printf '%s\n' "$DEPENDS" | tr ',' '\n' | sed -n 's/^ *\(nginx-abi-[^ ]*\).*/\1/p')"
[ "$GOT_ABI" = "$WANT_ABI" ] \
  || die "$DEB depends on '$GOT_ABI' but the installed nginx provides '$WANT_ABI' (nginx-dev and nginx versions differ?)"

echo "deb.sh: $DEB ($(( $(date +%s) - start ))s)"
echo "deb.sh: Depends: $DEPENDS"
