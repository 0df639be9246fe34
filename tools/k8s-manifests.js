#!/usr/bin/env node
// Kubernetes examples: consistency checks and the generated PrometheusRule.
//
//   node tools/k8s-manifests.js check            # lint examples/kubernetes/*.yaml
//   node tools/k8s-manifests.js rules            # rewrite examples/kubernetes/prometheusrule.yaml
//   node tools/k8s-manifests.js rules --check    # exit 1 if it is stale
//   node tools/k8s-manifests.js nginx-conf DIR   # write the ConfigMap's nginx.conf to DIR (for nginx -t)
//   node tools/k8s-manifests.js rules-extract F  # the PrometheusRule's groups as a rule file (promtool)
//
// No cluster is needed (and none is available in CI): the checks parse every
// document strictly and cross-check what would otherwise fail silently in a
// cluster: selectors that match nothing, port names that do not exist, the
// ServiceMonitor's jobLabel, the scrape annotations.
// Uses the `yaml` package from dashboards/node_modules (npm ci in dashboards/).
'use strict';
const fs = require('fs');
const path = require('path');

const REPO = path.resolve(__dirname, '..');
let YAML;
try {
  YAML = require(require.resolve('yaml', { paths: [path.join(REPO, 'dashboards')] }));
} catch (e) {
  console.error('k8s-manifests.js: run `npm ci` in dashboards/ first');
  process.exit(2);
}
const K8S = path.join(REPO, 'examples/kubernetes');
const RULE_FILES = ['alerting/rules/deepseek-recording.yml', 'alerting/rules/deepseek-alerts.yml'];
const RULE_OUT = path.join(K8S, 'prometheusrule.yaml');

function loadDocs() {
  const docs = [];
  for (const f of fs.readdirSync(K8S).filter((n) => /\.ya?ml$/.test(n)).sort()) {
    const all = YAML.parseAllDocuments(fs.readFileSync(path.join(K8S, f), 'utf8'), { uniqueKeys: true, strict: true });
    for (const d of all) {
      if (d.errors.length) throw new Error(`${f}: ${d.errors.map((e) => e.message).join('; ')}`);
      const o = d.toJS();
      if (o) docs.push({ file: f, o });
    }
  }
  return docs;
}

function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
}

function check() {
  const docs = loadDocs();
  const errs = [];
  const err = (d, m) => errs.push(`${d.file}: ${d.o.kind}/${d.o.metadata && d.o.metadata.name}: ${m}`);
  for (const d of docs) {
    if (!d.o.apiVersion || !d.o.kind || !d.o.metadata || !d.o.metadata.name) err(d, 'apiVersion, kind and metadata.name are required');
    if (d.o.kind !== 'Namespace' && !d.o.metadata.namespace) err(d, 'no namespace');
  }
  const of = (kind) => docs.filter((d) => d.o.kind === kind);
  const deployments = of('Deployment');
  const services = of('Service');
  for (const dep of deployments) {
    const spec = dep.o.spec;
    if (!matches(spec.selector.matchLabels, spec.template.metadata.labels)) err(dep, 'selector does not match the pod template');
    const ports = new Set(spec.template.spec.containers.flatMap((c) => (c.ports || []).map((p) => p.name)));
    const vols = new Set((spec.template.spec.volumes || []).map((v) => v.name));
    for (const c of spec.template.spec.containers) {
      for (const m of c.volumeMounts || []) if (!vols.has(m.name)) err(dep, `volumeMount ${m.name} has no volume`);
      for (const probe of [c.readinessProbe, c.livenessProbe]) {
        if (probe && probe.httpGet && typeof probe.httpGet.port === 'string' && !ports.has(probe.httpGet.port)) err(dep, `probe port ${probe.httpGet.port} unknown`);
      }
    }
    for (const v of spec.template.spec.volumes || []) {
      if (v.configMap && !of('ConfigMap').some((c) => c.o.metadata.name === v.configMap.name)) err(dep, `ConfigMap ${v.configMap.name} not defined`);
    }
    dep.ports = ports;
  }
  for (const svc of services) {
    const pods = deployments.filter((dep) => matches(svc.o.spec.selector, dep.o.spec.template.metadata.labels));
    if (pods.length === 0) err(svc, 'selector matches no Deployment');
    for (const p of svc.o.spec.ports) {
      if (typeof p.targetPort === 'string' && !pods.every((dep) => dep.ports.has(p.targetPort))) err(svc, `targetPort ${p.targetPort} is not a container port`);
    }
    const a = svc.o.metadata.annotations || {};
    if (a['prometheus.io/scrape'] === 'true') {
      if (!svc.o.spec.ports.some((p) => String(p.port) === a['prometheus.io/port'])) err(svc, `prometheus.io/port ${a['prometheus.io/port']} is not a Service port`);
      if (a['prometheus.io/path'] !== '/metrics') err(svc, 'prometheus.io/path is not /metrics');
    }
  }
  const sms = of('ServiceMonitor');
  if (sms.length === 0) errs.push('no ServiceMonitor');
  for (const sm of sms) {
    if (sm.o.apiVersion !== 'monitoring.coreos.com/v1') err(sm, 'apiVersion must be monitoring.coreos.com/v1');
    const targets = services.filter((s) => matches(sm.o.spec.selector.matchLabels, s.o.metadata.labels)
      && (!sm.o.spec.namespaceSelector || sm.o.spec.namespaceSelector.matchNames.includes(s.o.metadata.namespace)));
    if (targets.length !== 1) err(sm, `selects ${targets.length} Services (want exactly the metrics Service)`);
    for (const t of targets) {
      for (const ep of sm.o.spec.endpoints) {
        if (!t.o.spec.ports.some((p) => p.name === ep.port)) err(sm, `endpoint port ${ep.port} not on Service ${t.o.metadata.name}`);
      }
      if (sm.o.spec.jobLabel && !(t.o.metadata.labels || {})[sm.o.spec.jobLabel]) err(sm, `jobLabel ${sm.o.spec.jobLabel} is not a label of the Service`);
      else if (sm.o.spec.jobLabel && t.o.metadata.labels[sm.o.spec.jobLabel] !== 'deepseek-api') err(sm, 'job would not be deepseek-api');
    }
  }
  const rules = of('PrometheusRule');
  if (rules.length !== 1) errs.push('want exactly one PrometheusRule (node tools/k8s-manifests.js rules)');
  const cms = of('ConfigMap').filter((c) => c.o.data && c.o.data['nginx.conf']);
  if (cms.length !== 1) errs.push('want one ConfigMap with nginx.conf');
  for (const cm of cms) {
    if (/Bearer\s+sk-/.test(cm.o.data['nginx.conf'])) err(cm, 'API key in the ConfigMap');
  }
  if (errs.length) {
    for (const e of errs) console.error(`FAIL ${e}`);
    process.exit(1);
  }
  console.log(`OK: ${docs.length} documents (${[...new Set(docs.map((d) => d.o.kind))].join(', ')})`);
}

function rulesManifest() {
  const groups = [];
  for (const f of RULE_FILES) groups.push(...YAML.parse(fs.readFileSync(path.join(REPO, f), 'utf8')).groups);
  const doc = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'deepseek-metrics', namespace: 'deepseek', labels: { release: 'prometheus' } },
    spec: { groups },
  };
  return '# GENERATED by `node tools/k8s-manifests.js rules` from ' + RULE_FILES.join(' and ') + '.\n' +
    '# Do not edit: edit the rule files and regenerate.\n' +
    YAML.stringify(doc, { lineWidth: 0, blockQuote: 'literal' });
}

const [cmd, arg] = process.argv.slice(2);
if (cmd === 'check') {
  check();
} else if (cmd === 'rules') {
  const text = rulesManifest();
  if (arg === '--check') {
    if (!fs.existsSync(RULE_OUT) || fs.readFileSync(RULE_OUT, 'utf8') !== text) {
      console.error('prometheusrule.yaml is stale: node tools/k8s-manifests.js rules');
      process.exit(1);
    }
    console.log('prometheusrule.yaml is up to date');
  } else {
    fs.writeFileSync(RULE_OUT, text);
    console.log(`wrote ${RULE_OUT}`);
  }
} else if (cmd === 'rules-extract' && arg) {
  // the PrometheusRule's groups as a plain rule file, for `promtool check rules`
  const pr = loadDocs().find((d) => d.o.kind === 'PrometheusRule');
  fs.writeFileSync(arg, YAML.stringify({ groups: pr.o.spec.groups }, { lineWidth: 0 }));
  console.log(arg);
} else if (cmd === 'nginx-conf' && arg) {
  const cm = loadDocs().find((d) => d.o.kind === 'ConfigMap' && d.o.data && d.o.data['nginx.conf']);
  fs.mkdirSync(arg, { recursive: true });
  fs.writeFileSync(path.join(arg, 'nginx.conf'), cm.o.data['nginx.conf']);
  console.log(path.join(arg, 'nginx.conf'));
} else {
  console.error('usage: k8s-manifests.js check | rules [--check] | rules-extract FILE | nginx-conf DIR');
  process.exit(2);
}
