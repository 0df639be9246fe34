#!/usr/bin/env node
// Lists every PromQL query of a Grafana dashboard (panel targets, annotation
// queries, variable queries) with the dashboard variables substituted, so a
// test can run them against a live Prometheus:
//   $instance/$endpoint/$model (any form)  ->  .+   (all values; the label must exist)
//   $__rate_interval, $__interval          ->  1m   (override with --interval=30s)
//   $__range                               ->  1h
// Output: JSON lines {"kind":"panel"|"annotation"|"variable", "title", "refId",
// "expr", "instant", "exemplar" (panels)} ; variables `label_values(SELECTOR, LABEL)` become
// {"kind":"variable","match":SELECTOR,"label":LABEL}.
//
//   node extract-queries.js [--interval=1m] [dashboard.json]
'use strict';
const fs = require('fs');
const path = require('path');

let interval = '1m';
let file = path.join(__dirname, 'deepseek.json');
for (const a of process.argv.slice(2)) {
  if (a.startsWith('--interval=')) interval = a.slice(11);
  else file = a;
}
const dash = JSON.parse(fs.readFileSync(file, 'utf8'));
const varNames = ((dash.templating || {}).list || []).filter((v) => v.type !== 'datasource').map((v) => v.name);

function subst(expr) {
  let e = expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}/g, interval)
    .replace(/\$__interval|\$\{__interval\}/g, interval)
    .replace(/\$__range|\$\{__range\}/g, '1h');
  for (const n of varNames) {
    e = e.replace(new RegExp(`\\$\\{${n}(:[a-z]+)?\\}|\\[\\[${n}\\]\\]|\\$${n}\\b`, 'g'), '.+');
  }
  if (/\$[A-Za-z_{]/.test(e)) throw new Error(`unsubstituted variable in: ${expr}`);
  return e;
}

const out = [];
function walk(panels) {
  for (const p of panels || []) {
    if (p.panels) walk(p.panels);
    for (const t of p.targets || []) {
      if (!t.expr) continue;
      out.push({ kind: 'panel', title: p.title, id: p.id, refId: t.refId, expr: subst(t.expr),
        instant: !!t.instant && !t.range, legend: t.legendFormat || '', exemplar: !!t.exemplar });
    }
  }
}
walk(dash.panels);
for (const a of (dash.annotations || {}).list || []) {
  if (a.expr) out.push({ kind: 'annotation', title: a.name, expr: subst(a.expr), instant: false });
}
for (const v of (dash.templating || {}).list || []) {
  if (v.type !== 'query') continue;
  const query = typeof v.query === 'string' ? v.query : (v.query && v.query.query) || '';
  const m = /^\s*label_values\(\s*(.*?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$/.exec(query);
  if (m) out.push({ kind: 'variable', title: v.name, match: subst(m[1]), label: m[2] });
  else out.push({ kind: 'variable', title: v.name, expr: subst(query), instant: true });
}
process.stdout.write(out.map((o) => JSON.stringify(o)).join("\n") + "\n");
