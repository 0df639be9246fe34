#!/usr/bin/env bash
# Validate the Grafana dashboard(s) against JSON Schemas generated from
# @grafana/schema's TypeScript types (ts-json-schema-generator + ajv), and check
# that deepseek.json is what generate.js produces.
#
#   dashboards/validate.sh                 # validates dashboards/*.json
#   dashboards/validate.sh FILE.json ...   # validates the given files
#
# Installs the pinned Node packages (npm ci, from package-lock.json) on first
# use. Schemas are cached in dashboards/.schema-cache/<@grafana/schema version>/.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if [ ! -d node_modules/@grafana/schema ] || [ ! -d node_modules/ajv ] \
   || [ ! -d node_modules/ts-json-schema-generator ] || [ ! -d node_modules/@grafana/grafana-foundation-sdk ]; then
  echo "validate.sh: installing Node packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

SCHEMA_PKG=node_modules/@grafana/schema
VER="$(node -p "require('./$SCHEMA_PKG/package.json').version")"
CACHE=".schema-cache/$VER"
mkdir -p "$CACHE"
GEN=(node node_modules/ts-json-schema-generator/dist/cjs/ts-json-schema-generator.js)
[ -f "${GEN[1]}" ] || GEN=(npx --no-install ts-json-schema-generator)

gen() { # gen OUT PATH TYPE
  local out="$CACHE/$1" src="$2" type="$3"
  [ -s "$out" ] && return 0
  [ -f "$src" ] || { echo "validate.sh: $src missing in @grafana/schema $VER" >&2; return 1; }
  "${GEN[@]}" -f tsconfig.schema.json --path "$src" --type "$type" --no-type-check -o "$out.tmp"
  mv "$out.tmp" "$out"
}

RAW="$SCHEMA_PKG/dist/types/raw"
gen dashboard.schema.json "$RAW/dashboard/x/types.gen.d.ts" Dashboard
for p in timeseries stat heatmap gauge table bargauge barchart piechart text; do
  f="$RAW/composable/$p/panelcfg/x/types.gen.d.ts"
  [ -f "$f" ] || continue
  gen "$p.Options.json" "$f" Options
  if grep -q '^export interface FieldConfig' "$f"; then
    gen "$p.FieldConfig.json" "$f" FieldConfig
  fi
done

if [ $# -eq 0 ]; then
  node generate.js --check
  set -- "$HERE"/*.json
  # package*.json and tsconfig are not dashboards
  ARGS=()
  for f in "$@"; do
    case "$(basename "$f")" in package.json|package-lock.json|tsconfig*.json) ;; *) ARGS+=("$f") ;; esac
  done
  set -- "${ARGS[@]}"
fi
echo "validate.sh: @grafana/schema $VER"
node validate.js "$CACHE" "$@"
