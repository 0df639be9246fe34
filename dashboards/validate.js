#!/usr/bin/env node
// Validates Grafana dashboard JSON files against JSON Schemas generated from
// @grafana/schema's TypeScript types (see validate.sh, which generates them):
//   - the whole dashboard against `Dashboard` (raw/dashboard/x/types.gen.d.ts),
//     strict: no property outside the type;
//   - each panel's `options` against its plugin's `Options` type and
//     `fieldConfig.defaults.custom` against its `FieldConfig` type
//     (raw/composable/<plugin>/panelcfg/x/types.gen.d.ts), where they exist;
//   - project lints: datasource variable, instance/endpoint/model variables,
//     unique panel ids and refIds, units and legends set, no overlapping panels.
//
//   node validate.js SCHEMA_DIR dashboard.json [...]
'use strict';

const fs = require('fs');
const path = require('path');
const Ajv = require('ajv');

const [schemaDir, ...files] = process.argv.slice(2);
if (!schemaDir || files.length === 0) {
  console.error('usage: validate.js SCHEMA_DIR dashboard.json [...]');
  process.exit(2);
}

const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true });
function load(name, patch) {
  const p = path.join(schemaDir, name);
  if (!fs.existsSync(p)) return null;
  const schema = JSON.parse(fs.readFileSync(p, 'utf8'));
  if (patch) patch(schema);
  return ajv.compile(schema);
}
// The one relaxation: Grafana's CUE schema keeps AnnotationQuery open for the
// datasource's own fields (Prometheus: expr, step, titleFormat, textFormat,
// tagKeys, useValueForTime); the generated TypeScript type loses that. Those
// fields are checked by the lints below instead.
const PROM_ANNOTATION_FIELDS = ['expr', 'step', 'titleFormat', 'textFormat', 'tagKeys', 'useValueForTime'];
const dashboardSchema = load('dashboard.schema.json', (s) => {
  s.definitions.AnnotationQuery.additionalProperties = false;
  for (const f of PROM_ANNOTATION_FIELDS) {
    s.definitions.AnnotationQuery.properties[f] = f === 'useValueForTime' ? { type: 'boolean' } : { type: 'string' };
  }
});
if (!dashboardSchema) {
  console.error(`no ${schemaDir}/dashboard.schema.json`);
  process.exit(2);
}

let failures = 0;
function fail(file, msg) {
  failures++;
  console.error(`FAIL ${file}: ${msg}`);
}
function fmt(errors) {
  return errors.map((e) => `${e.instancePath || '/'} ${e.message}${e.params && e.params.additionalProperty ? ` (${e.params.additionalProperty})` : ''}`).join('; ');
}

for (const file of files) {
  const dash = JSON.parse(fs.readFileSync(file, 'utf8'));
  // Exports made with "share externally" carry __inputs/__requires/__elements,
  // which are import metadata, not part of the dashboard model.
  for (const k of ['__inputs', '__requires', '__elements']) delete dash[k];

  if (!dashboardSchema(dash)) fail(file, `dashboard schema: ${fmt(dashboardSchema.errors)}`);

  let checkedPanels = 0;
  const ids = new Set();
  const cells = new Map();
  for (const p of dash.panels || []) {
    const where = `panel ${p.id} "${p.title}" (${p.type})`;
    if (ids.has(p.id)) fail(file, `${where}: duplicate id`);
    ids.add(p.id);
    const g = p.gridPos;
    if (!g) { fail(file, `${where}: no gridPos`); continue; }
    if (g.x + g.w > 24) fail(file, `${where}: wider than the grid`);
    for (let y = g.y; y < g.y + g.h; y++) {
      for (let x = g.x; x < g.x + g.w; x++) {
        const k = `${x},${y}`;
        if (cells.has(k)) fail(file, `${where}: overlaps panel ${cells.get(k)}`);
        cells.set(k, p.id);
      }
    }
    if (p.type === 'row') continue;
    checkedPanels++;

    const optionsSchema = load(`${p.type}.Options.json`);
    if (optionsSchema) {
      if (!optionsSchema(p.options || {})) fail(file, `${where}: options: ${fmt(optionsSchema.errors)}`);
    } else {
      fail(file, `${where}: no options schema for panel type ${p.type}`);
    }
    const fcSchema = load(`${p.type}.FieldConfig.json`);
    const custom = p.fieldConfig && p.fieldConfig.defaults && p.fieldConfig.defaults.custom;
    if (fcSchema && custom && !fcSchema(custom)) {
      fail(file, `${where}: fieldConfig.defaults.custom: ${fmt(fcSchema.errors)}`);
    }

    if (!p.datasource || p.datasource.uid !== '${datasource}') fail(file, `${where}: datasource is not \${datasource}`);
    if (!p.title) fail(file, `${where}: no title`);
    if (!p.description) fail(file, `${where}: no description`);
    if (p.type === 'heatmap') {
      if (!(p.options && p.options.yAxis && p.options.yAxis.unit)) fail(file, `${where}: no y axis unit`);
    } else if (p.type !== 'table' && !(p.fieldConfig && p.fieldConfig.defaults && p.fieldConfig.defaults.unit)) {
      fail(file, `${where}: no unit`);
    }
    const refs = new Set();
    if (!p.targets || p.targets.length === 0) fail(file, `${where}: no targets`);
    for (const t of p.targets || []) {
      if (!t.refId || refs.has(t.refId)) fail(file, `${where}: missing or duplicate refId ${t.refId}`);
      refs.add(t.refId);
      if (!t.expr) fail(file, `${where}: target ${t.refId} has no expr`);
      if (p.type !== 'table' && !t.legendFormat) fail(file, `${where}: target ${t.refId} has no legendFormat`);
      if (t.expr && !/\$instance/.test(t.expr)) fail(file, `${where}: target ${t.refId} ignores $instance`);
    }
  }

  const vars = new Map(((dash.templating || {}).list || []).map((v) => [v.name, v]));
  const ds = vars.get('datasource');
  if (!ds || ds.type !== 'datasource' || ds.query !== 'prometheus') fail(file, 'no Prometheus datasource variable "datasource"');
  for (const name of ['instance', 'endpoint', 'model']) {
    const v = vars.get(name);
    if (!v || v.type !== 'query') fail(file, `no query variable "${name}"`);
    else if (!v.datasource || v.datasource.uid !== '${datasource}') fail(file, `variable ${name} does not use \${datasource}`);
  }
  const ann = ((dash.annotations || {}).list || []).filter((a) => a.expr);
  for (const a of ann) {
    if (!a.datasource || a.datasource.uid !== '${datasource}') fail(file, `annotation ${a.name}: datasource is not \${datasource}`);
    if (!a.titleFormat) fail(file, `annotation ${a.name}: no titleFormat`);
  }
  if (!ann.some((a) => /deepseek_metrics_last_reload_time_seconds/.test(a.expr))) fail(file, 'no reload annotation');
  if (!Number.isInteger(dash.schemaVersion) || dash.schemaVersion < 39) fail(file, `old schemaVersion ${dash.schemaVersion}`);

  console.log(`${file}: schemaVersion ${dash.schemaVersion}, ${checkedPanels} panels, ` +
    `${(dash.panels || []).length - checkedPanels} rows, ${vars.size} variables, ${ann.length} query annotations checked`);
}

if (failures) {
  console.error(`${failures} problem(s)`);
  process.exit(1);
}
console.log('OK');
