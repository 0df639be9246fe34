#!/usr/bin/env node
// Generates dashboards/deepseek.json, the Grafana dashboard for
// ngx_http_deepseek_metrics_module, with @grafana/grafana-foundation-sdk.
//
//   cd dashboards && npm ci && node generate.js          # rewrite deepseek.json
//   node generate.js --check                             # exit 1 if deepseek.json is stale
//
// Edit this file, not the JSON: the JSON is committed so users can import it
// without Node, and `validate.sh` checks that it matches this generator.
'use strict';

const fs = require('fs');
const path = require('path');
const dashboard = require('@grafana/grafana-foundation-sdk/dashboard');
const common = require('@grafana/grafana-foundation-sdk/common');
const prometheus = require('@grafana/grafana-foundation-sdk/prometheus');
const timeseries = require('@grafana/grafana-foundation-sdk/timeseries');
const stat = require('@grafana/grafana-foundation-sdk/stat');
const heatmap = require('@grafana/grafana-foundation-sdk/heatmap');
const bargauge = require('@grafana/grafana-foundation-sdk/bargauge');
const table = require('@grafana/grafana-foundation-sdk/table');

const OUT = path.join(__dirname, 'deepseek.json');
const DS = { type: 'prometheus', uid: '${datasource}' };

// Label selectors. Every per-request family carries endpoint and model;
// deepseek_requests_in_flight only endpoint; zone/meta families neither.
const SEL = 'instance=~"$instance", endpoint=~"$endpoint", model=~"$model"';
const SEL_EP = 'instance=~"$instance", endpoint=~"$endpoint"';
const SEL_I = 'instance=~"$instance"';
const RI = '$__rate_interval';
const INBAND = 'stream_truncated|queue_timeout|content_filter|insufficient_system_resource|empty_response';

// ---------------------------------------------------------------- helpers
let refIds = 0;
function q(expr, legend, opts = {}) {
  const b = new prometheus.DataqueryBuilder()
    .datasource(DS)
    .expr(expr)
    .refId(opts.refId || String.fromCharCode(65 + (refIds++ % 26)));
  if (legend !== undefined) b.legendFormat(legend);
  if (opts.instant) b.instant(true).range(false);
  else b.range(true);
  if (opts.format) b.format(opts.format);
  if (opts.exemplar) b.exemplar(true);
  return b;
}

function legend(calcs = ['mean', 'max', 'lastNotNull']) {
  return new common.VizLegendOptionsBuilder()
    .showLegend(true)
    .displayMode(common.LegendDisplayMode.Table)
    .placement(common.LegendPlacement.Bottom)
    .calcs(calcs);
}

function tooltip() {
  return new common.VizTooltipOptionsBuilder()
    .mode(common.TooltipDisplayMode.Multi)
    .sort(common.SortOrder.Descending);
}

function thresholds(steps) {
  return new dashboard.ThresholdsConfigBuilder()
    .mode(dashboard.ThresholdsMode.Absolute)
    .steps(steps.map(([value, color]) => ({ value, color })));
}

const GREEN_ONLY = thresholds([[null, 'green']]);

function ts(title, description, unit, targets, o = {}) {
  refIds = 0;
  const p = new timeseries.PanelBuilder()
    .title(title)
    .description(description)
    .datasource(DS)
    .unit(unit)
    .min(o.min === undefined ? 0 : o.min)
    .legend(legend(o.calcs))
    .tooltip(tooltip())
    .lineWidth(1)
    .fillOpacity(o.fill === undefined ? 10 : o.fill)
    .showPoints(common.VisibilityMode.Never)
    .spanNulls(false)
    .thresholds(o.thresholds || GREEN_ONLY)
    .gridPos({ h: o.h || 8, w: o.w || 12, x: 0, y: 0 });
  if (o.max !== undefined) p.max(o.max);
  if (o.stack) p.stacking(new common.StackingConfigBuilder().mode(common.StackingMode.Normal));
  if (o.thresholdsStyle) {
    p.thresholdsStyle(new common.GraphThresholdsStyleConfigBuilder().mode(o.thresholdsStyle));
  }
  for (const t of targets) p.withTarget(t);
  for (const [re, props] of o.overridesByRegexp || []) p.overrideByRegexp(re, props);
  return p;
}

function st(title, description, unit, target, o = {}) {
  refIds = 0;
  const p = new stat.PanelBuilder()
    .title(title)
    .description(description)
    .datasource(DS)
    .unit(unit)
    .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false))
    .colorMode(common.BigValueColorMode.Value)
    .graphMode(common.BigValueGraphMode.Area)
    .textMode(common.BigValueTextMode.Auto)
    .thresholds(o.thresholds || GREEN_ONLY)
    .gridPos({ h: 4, w: o.w || 3, x: 0, y: 0 })
    .withTarget(target);
  if (o.decimals !== undefined) p.decimals(o.decimals);
  if (o.noValue) p.noValue(o.noValue);
  for (const [re, props] of o.overridesByRegexp || []) p.overrideByRegexp(re, props);
  return p;
}

function row(title) {
  return new dashboard.RowBuilder(title);
}

// A quantile from the native histogram where Prometheus stores one (zone
// native=, Prometheus with native histograms: 2.42 then keeps no _bucket
// series of that family), else from the classic _bucket series. Both sides
// end with the same labels (the by list), so `or` takes the native series
// and falls back to the classic one: the panel works with either.
function hq(qq, family, sel, by = []) {
  const nat = by.length ? `sum by (${by.join(', ')}) ` : 'sum';
  const cls = `sum by (${[...by, 'le'].join(', ')}) `;
  return `histogram_quantile(${qq}, ${nat}(rate(${family}{${sel}}[${RI}])))\n`
    + `or histogram_quantile(${qq}, ${cls}(rate(${family}_bucket{${sel}}[${RI}])))`;
}

// Share of observations above `le` seconds, native (histogram_fraction) or
// classic (the bucket `le` must be a classic bound, written as exported).
function above(family, sel, le) {
  return `1 - (histogram_fraction(0, ${Number(le)}, sum(rate(${family}{${sel}}[${RI}])))\n`
    + `or sum(rate(${family}_bucket{${sel}, le="${le}"}[${RI}]))\n`
    + `/ sum(rate(${family}_count{${sel}}[${RI}])))`;
}

// exemplars (deepseek_metrics_exemplar): shown on the highest quantile only,
// each dot once; Prometheus needs --enable-feature=exemplar-storage
function quantiles(family, sel, qs = [0.5, 0.9, 0.99], o = {}) {
  return qs.map((qq, i) =>
    q(hq(qq, family, sel), `p${Math.round(qq * 100)}`,
      { exemplar: o.exemplar && i === qs.length - 1 }));
}

// Currency-aware units for the cost panels (legend/series names contain the
// currency label value).
const CURRENCY_OVERRIDES = [
  ['.*USD.*', [{ id: 'unit', value: 'currencyUSD' }]],
  ['.*CNY.*', [{ id: 'unit', value: 'currencyCNY' }]],
  ['.*EUR.*', [{ id: 'unit', value: 'currencyEUR' }]],
];

// ---------------------------------------------------------------- variables
const vDatasource = new dashboard.DatasourceVariableBuilder('datasource')
  .label('Data source')
  .type('prometheus');

function queryVar(name, label, query) {
  return new dashboard.QueryVariableBuilder(name)
    .label(label)
    .datasource(DS)
    .query(query)
    .definition(query)
    .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
    .sort(dashboard.VariableSort.AlphabeticalAsc)
    .multi(true)
    .includeAll(true)
    .allValue('.*')
    .current({ selected: true, text: ['All'], value: ['$__all'] });
}

const vInstance = queryVar('instance', 'Instance', 'label_values(deepseek_build_info, instance)');
const vEndpoint = queryVar('endpoint', 'Endpoint',
  'label_values(deepseek_requests_total{instance=~"$instance"}, endpoint)');
const vModel = queryVar('model', 'Model',
  'label_values(deepseek_requests_total{instance=~"$instance", endpoint=~"$endpoint"}, model)');

// ---------------------------------------------------------------- annotations
const aBuiltin = new dashboard.AnnotationQueryBuilder()
  .name('Annotations & Alerts')
  .datasource({ type: 'grafana', uid: '-- Grafana --' })
  .builtIn(true)
  .enable(true)
  .hide(true)
  .iconColor('rgba(0, 211, 255, 1)')
  .type('dashboard');

const aReload = new dashboard.AnnotationQueryBuilder()
  .name('nginx reloads')
  .datasource(DS)
  .enable(true)
  .iconColor('orange')
  .expr(`changes(deepseek_metrics_last_reload_time_seconds{${SEL_I}}[2m]) > 0`)
  .step('60s')
  .titleFormat('nginx reload')
  .textFormat('{{instance}}: zone {{zone}} reused by a configuration reload');

const aReset = new dashboard.AnnotationQueryBuilder()
  .name('Zone resets / restarts')
  .datasource(DS)
  .enable(true)
  .iconColor('red')
  .expr(`changes(deepseek_metrics_zone_start_time_seconds{${SEL_I}}[2m]) > 0`)
  .step('60s')
  .titleFormat('metrics zone reset')
  .textFormat('{{instance}}: zone {{zone}} created anew (nginx start or zone layout change); counters restart');

const aMaster = new dashboard.AnnotationQueryBuilder()
  .name('nginx master changed')
  .datasource(DS)
  .enable(true)
  .iconColor('purple')
  .expr(`changes(deepseek_metrics_master_pid{${SEL_I}}[2m]) > 0`)
  .step('60s')
  .titleFormat('nginx master changed')
  .textFormat('{{instance}}: zone {{zone}} served by another nginx master (restart or binary upgrade); during a USR2 overlap scrapes alternate between the two zones');

// ---------------------------------------------------------------- panels
const panels = [];

panels.push(row('Overview'));
panels.push(st('Requests / s', 'All requests finished per second (deepseek_requests_total).', 'reqps',
  q(`sum(rate(deepseek_requests_total{${SEL}}[${RI}]))`, 'req/s')));
panels.push(st('5xx ratio', 'Share of requests that ended with a 5xx status.', 'percentunit',
  q(`(sum(rate(deepseek_requests_total{${SEL}, status=~"5.."}[${RI}])) or vector(0))\n/ sum(rate(deepseek_requests_total{${SEL}}[${RI}]))`, '5xx'),
  { thresholds: thresholds([[null, 'green'], [0.01, 'orange'], [0.05, 'red']]), decimals: 2 }));
panels.push(st('4xx ratio', 'Share of requests that ended with a 4xx status (including 429, 402 and 499).', 'percentunit',
  q(`(sum(rate(deepseek_requests_total{${SEL}, status=~"4.."}[${RI}])) or vector(0))\n/ sum(rate(deepseek_requests_total{${SEL}}[${RI}]))`, '4xx'),
  { thresholds: thresholds([[null, 'green'], [0.05, 'orange'], [0.2, 'red']]), decimals: 2 }));
panels.push(st('Latency p99', '99th percentile of request duration (start to last byte).', 's',
  q(hq(0.99, 'deepseek_request_latency_seconds', SEL), 'p99'),
  { thresholds: thresholds([[null, 'green'], [60, 'orange'], [120, 'red']]) }));
panels.push(st('TTFT p90', '90th percentile of time to first token (streaming requests).', 's',
  q(hq(0.9, 'deepseek_time_to_first_token_seconds', SEL), 'p90'),
  { thresholds: thresholds([[null, 'green'], [5, 'orange'], [10, 'red']]) }));
panels.push(st('Cache hit ratio', 'Input tokens served from DeepSeek\'s context cache (billed at the cache-hit price).', 'percentunit',
  q(`sum(rate(deepseek_tokens_total{${SEL}, type="input_cache_hit"}[${RI}]))\n/ sum(rate(deepseek_tokens_total{${SEL}, type=~"input_cache_hit|input_cache_miss"}[${RI}]))`, 'hit ratio'),
  { decimals: 1 }));
panels.push(st('In flight', 'Requests started and not finished yet.', 'short',
  q(`sum(deepseek_requests_in_flight{${SEL_EP}})`, 'in flight')));
panels.push(st('Cost, last 24 h', 'Money spent in the last 24 hours by the configured price table, per currency (needs deepseek_metrics_price).', 'short',
  q(`sum by (currency) (increase(deepseek_cost_total{${SEL}}[24h]))`, '{{currency}}'),
  { decimals: 2, overridesByRegexp: CURRENCY_OVERRIDES, noValue: 'no prices' }));

panels.push(row('Traffic'));
panels.push(ts('Request rate by endpoint', 'rate(deepseek_requests_total) per endpoint.', 'reqps',
  [q(`sum by (endpoint) (rate(deepseek_requests_total{${SEL}}[${RI}]))`, '{{endpoint}}')], { w: 8 }));
panels.push(ts('Request rate by status', 'rate(deepseek_requests_total) per exact status code sent to the client.', 'reqps',
  [q(`sum by (status) (rate(deepseek_requests_total{${SEL}}[${RI}]))`, '{{status}}')], { w: 8,
    overridesByRegexp: [
      ['^2..$', [{ id: 'color', value: { mode: 'fixed', fixedColor: 'green' } }]],
      ['^5..$', [{ id: 'color', value: { mode: 'fixed', fixedColor: 'red' } }]],
    ] }));
panels.push(ts('Request rate by model', 'rate(deepseek_requests_total) per served model (other = outside the allowlist, unknown = none seen).', 'reqps',
  [q(`sum by (model) (rate(deepseek_requests_total{${SEL}}[${RI}]))`, '{{model}}')], { w: 8 }));
panels.push(ts('Requests in flight by endpoint', 'deepseek_requests_in_flight: requests open right now (long streams keep it up).', 'short',
  [q(`sum by (endpoint) (deepseek_requests_in_flight{${SEL_EP}})`, '{{endpoint}}')], { w: 12 }));
panels.push(ts('Requests: last hour and forecast for the next hour',
  'Requests in the last hour, and the article\'s predict_linear(deepseek_requests_total[1h], 3600) turned into the requests expected in the next hour at the current trend.',
  'short',
  [q(`sum(increase(deepseek_requests_total{${SEL}}[1h]))`, 'last 1h'),
    q(`sum(predict_linear(deepseek_requests_total{${SEL}}[1h], 3600)) - sum(deepseek_requests_total{${SEL}})`, 'forecast next 1h')],
  { w: 12, fill: 0 }));

panels.push(row('Errors'));
panels.push(ts('Error ratios (5xx, 4xx)', '5xx and 4xx responses as a share of all requests. HighErrorRate fires above 1% 5xx for 5 minutes.', 'percentunit',
  [q(`sum(rate(deepseek_requests_total{${SEL}, status=~"5.."}[${RI}]))\n/ sum(rate(deepseek_requests_total{${SEL}}[${RI}]))`, '5xx'),
    q(`sum(rate(deepseek_requests_total{${SEL}, status=~"4.."}[${RI}]))\n/ sum(rate(deepseek_requests_total{${SEL}}[${RI}]))`, '4xx')],
  { w: 12, thresholds: thresholds([[null, 'transparent'], [0.01, 'red']]), thresholdsStyle: common.GraphThresholdsStyleMode.Dashed,
    overridesByRegexp: [['^5xx$', [{ id: 'color', value: { mode: 'fixed', fixedColor: 'red' } }]],
      ['^4xx$', [{ id: 'color', value: { mode: 'fixed', fixedColor: 'orange' } }]]] }));
panels.push(ts('HTTP errors by reason', 'deepseek_errors_total for HTTP-level failures (rate_limited = 429, insufficient_balance = 402, upstream_unavailable = 502, upstream_timeout = 504, ...).', 'reqps',
  [q(`sum by (reason) (rate(deepseek_errors_total{${SEL}, reason!~"${INBAND}"}[${RI}]))`, '{{reason}}')], { w: 12 }));
panels.push(ts('In-band failures under a 200', 'Responses that were 200 but failed: truncated streams, queue timeouts (only keep-alives), content_filter, insufficient_system_resource, empty answers.', 'reqps',
  [q(`sum by (reason) (rate(deepseek_errors_total{${SEL}, reason=~"${INBAND}"}[${RI}]))`, '{{reason}}')], { w: 12 }));
panels.push(ts('Usage missing', 'Responses whose token usage could not be read, by reason (compressed, truncated, client_abort, invalid_json, absent): their tokens and cost are not counted.', 'reqps',
  [q(`sum by (reason) (rate(deepseek_usage_missing_total{${SEL}}[${RI}]))`, '{{reason}}')], { w: 12 }));

panels.push(row('Latency'));
panels.push(ts('Request latency p50 / p90 / p99', 'Request start to last byte ($request_time), from deepseek_request_latency_seconds: its native histogram where Prometheus stores one (zone native=), else its classic buckets. Dots on p99: exemplars, the latest request of each bucket (trace_id = the deepseek_metrics_exemplar variable, e.g. $request_id); see docs/exemplars.md.', 's',
  quantiles('deepseek_request_latency_seconds', SEL, undefined, { exemplar: true }), { w: 12, fill: 0 }));
refIds = 0;
panels.push(new heatmap.PanelBuilder()
  .title('Request latency heatmap')
  .description('Requests per latency bucket per second (deepseek_request_latency_seconds_bucket): classic buckets only, empty on a Prometheus 2.42 that stores the native histogram of a native=latency zone (keep both with always_scrape_classic_histograms, examples/README.md).')
  .datasource(DS)
  .gridPos({ h: 8, w: 12, x: 0, y: 0 })
  .calculate(false)
  .yAxis(new heatmap.YAxisConfigBuilder().unit('s'))
  .cellValues(new heatmap.CellValuesBuilder().unit('reqps'))
  .color(new heatmap.HeatmapColorOptionsBuilder().mode('scheme').scheme('Oranges').scale('exponential').exponent(0.5).steps(64).fill('dark-orange').reverse(false))
  .rowsFrame(new heatmap.RowsHeatmapOptionsBuilder().layout(common.HeatmapCellLayout.Le))
  .showValue(common.VisibilityMode.Never)
  .tooltip(new heatmap.HeatmapTooltipBuilder().mode(common.TooltipDisplayMode.Single).yHistogram(true).showColorScale(false))
  .withTarget(q(`sum by (le) (rate(deepseek_request_latency_seconds_bucket{${SEL}}[${RI}]))`, '{{le}}', { format: prometheus.PromQueryFormat.Heatmap })));
panels.push(ts('Time to first token p50 / p90 / p99', 'Streaming requests: request start to the first SSE event with content, reasoning or tool calls (keep-alives do not count). Native histogram where Prometheus stores one, else classic buckets. Dots on p99: exemplars (docs/exemplars.md).', 's',
  quantiles('deepseek_time_to_first_token_seconds', SEL, undefined, { exemplar: true }), { w: 12, fill: 0 }));
refIds = 0;
panels.push(ts('Queue wait and first answer token (p90)', 'Queue wait: request start to the first data event (time queued at DeepSeek). First answer token: first non-reasoning content.', 's',
  [q(hq(0.9, 'deepseek_queue_wait_seconds', SEL), 'queue wait p90'),
    q(hq(0.9, 'deepseek_time_to_first_token_seconds', SEL), 'first token p90'),
    q(hq(0.9, 'deepseek_time_to_first_answer_token_seconds', SEL), 'first answer token p90')],
  { w: 12, fill: 0 }));
panels.push(ts('Time per output token p50 / p90', 'Generation speed of streaming answers (deepseek_time_per_output_token_seconds).', 's',
  quantiles('deepseek_time_per_output_token_seconds', SEL, [0.5, 0.9]), { w: 12, fill: 0 }));
panels.push(ts('Latency p99 by endpoint', 'Per-endpoint p99 of request duration.', 's',
  [q(hq(0.99, 'deepseek_request_latency_seconds', SEL, ['endpoint']), '{{endpoint}}')],
  { w: 12, fill: 0 }));

panels.push(row('Tokens and cost'));
panels.push(ts('Tokens / s by type', 'deepseek_tokens_total by type (input_cache_hit + input_cache_miss + output = total_tokens); reasoning tokens are part of output.', 'si:tok/s',
  [q(`sum by (type) (rate(deepseek_tokens_total{${SEL}}[${RI}]))`, '{{type}}'),
    q(`sum(rate(deepseek_reasoning_tokens_total{${SEL}}[${RI}]))`, 'reasoning (part of output)')],
  { w: 12 }));
panels.push(ts('Tokens / s by model', 'All token types per model.', 'si:tok/s',
  [q(`sum by (model) (rate(deepseek_tokens_total{${SEL}}[${RI}]))`, '{{model}}')], { w: 12, stack: true, fill: 30 }));
panels.push(ts('Input cache hit ratio by model', 'input_cache_hit / (input_cache_hit + input_cache_miss): the share of input tokens billed at the cache-hit price.', 'percentunit',
  [q(`sum by (model) (rate(deepseek_tokens_total{${SEL}, type="input_cache_hit"}[${RI}]))\n/ sum by (model) (rate(deepseek_tokens_total{${SEL}, type=~"input_cache_hit|input_cache_miss"}[${RI}]))`, '{{model}}')],
  { w: 8, max: 1, fill: 0 }));
panels.push(ts('Cost per hour by model', 'Spend rate by the configured price table (deepseek_cost_total), in currency per hour.', 'short',
  [q(`sum by (model, currency) (rate(deepseek_cost_total{${SEL}}[${RI}])) * 3600`, '{{model}} ({{currency}})')],
  { w: 8, overridesByRegexp: CURRENCY_OVERRIDES }));
panels.push(ts('Cost per day by model (rolling 24 h)', 'increase(deepseek_cost_total[24h]) per model and currency.', 'short',
  [q(`sum by (model, currency) (increase(deepseek_cost_total{${SEL}}[24h]))`, '{{model}} ({{currency}})')],
  { w: 8, fill: 0, overridesByRegexp: CURRENCY_OVERRIDES }));

panels.push(row('Balance and stalls'));
panels.push(ts('Account balance and 24 h forecast', 'deepseek_balance by currency and type, from the last GET /user/balance that went through nginx (a client, or a cron job or health check: read it every few minutes), and predict_linear of the total 24 h ahead at the spend of the last 6 h. DeepSeekBalanceRunway fires when that forecast is below 0.', 'short',
  [q(`max by (currency, type) (deepseek_balance{${SEL_I}})`, '{{currency}} {{type}}'),
    q(`min by (currency) (predict_linear(deepseek_balance{${SEL_I}, type="total"}[6h], 86400))`, '{{currency}} total in 24 h (forecast)')],
  { w: 18, fill: 0, overridesByRegexp: CURRENCY_OVERRIDES }));
panels.push(st('Balance available', 'deepseek_balance_available: is_available of the last balance read (1: the account can make calls).', 'short',
  q(`min(deepseek_balance_available{${SEL_I}})`, 'available'),
  { w: 3, thresholds: thresholds([[null, 'red'], [1, 'green']]), noValue: 'never read' }));
panels.push(st('Balance read ago', 'Time since the last balance reading (deepseek_balance_updated_seconds): the balance gauges are only as fresh as the last GET /user/balance through nginx.', 's',
  q(`time() - max(deepseek_balance_updated_seconds{${SEL_I}})`, 'age'),
  { w: 3, thresholds: thresholds([[null, 'green'], [3600, 'orange'], [21600, 'red']]), noValue: 'never read' }));
panels.push(ts('Streams that stalled', 'Share of streamed responses whose longest pause between two data events (deepseek_stream_max_gap_seconds) exceeded 10 s and 60 s. DeepSeekStreamStalls fires above 5% over 10 s.', 'percentunit',
  [q(above('deepseek_stream_max_gap_seconds', SEL, '10.0'), 'paused > 10 s'),
    q(above('deepseek_stream_max_gap_seconds', SEL, '60.0'), 'paused > 60 s')],
  { w: 8, max: 1, fill: 0, thresholds: thresholds([[null, 'transparent'], [0.05, 'red']]), thresholdsStyle: common.GraphThresholdsStyleMode.Dashed }));
panels.push(ts('Longest pause in a stream p50 / p90 / p99', 'deepseek_stream_max_gap_seconds: per stream, the longest pause between two data events (up to the end of a stream cut without [DONE]).', 's',
  quantiles('deepseek_stream_max_gap_seconds', SEL), { w: 8, fill: 0 }));
panels.push(ts('Keep-alives / s', 'deepseek_keepalives_total: SSE comment lines (": keep-alive") DeepSeek sent while a request was queued or busy.', 'ops',
  [q(`sum by (model) (rate(deepseek_keepalives_total{${SEL}}[${RI}]))`, '{{model}}')], { w: 8 }));

panels.push(row('Metrics module'));
panels.push(ts('Zone series: used and capacity', 'deepseek_metrics_series: label sets in use and the zone\'s capacity; when full, new label sets go to the __overflow__ series.', 'short',
  [q(`sum by (instance, zone) (deepseek_metrics_series{${SEL_I}, state="used"})`, '{{instance}} {{zone}} used'),
    q(`sum by (instance, zone) (deepseek_metrics_series{${SEL_I}, state="capacity"})`, '{{instance}} {{zone}} capacity')],
  { w: 8, fill: 0 }));
refIds = 0;
panels.push(new bargauge.PanelBuilder()
  .title('Zone usage')
  .description('Series used / capacity per zone. DeepSeekMetricsZoneNearCapacity fires above 90%.')
  .datasource(DS)
  .unit('percentunit')
  .min(0)
  .max(1)
  .thresholds(thresholds([[null, 'green'], [0.75, 'orange'], [0.9, 'red']]))
  .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false))
  .displayMode(common.BarGaugeDisplayMode.Gradient)
  .valueMode(common.BarGaugeValueMode.Color)
  .namePlacement(common.BarGaugeNamePlacement.Auto)
  .orientation(common.VizOrientation.Horizontal)
  .showUnfilled(true)
  .sizing(common.BarGaugeSizing.Auto)
  .minVizWidth(8)
  .minVizHeight(16)
  .maxVizHeight(300)
  .legend(new common.VizLegendOptionsBuilder().showLegend(false).displayMode(common.LegendDisplayMode.List).placement(common.LegendPlacement.Bottom).calcs([]))
  .gridPos({ h: 8, w: 4, x: 0, y: 0 })
  .withTarget(q(`max by (instance, zone) (deepseek_metrics_series{${SEL_I}, state="used"}\n/ ignoring (state) deepseek_metrics_series{${SEL_I}, state="capacity"})`, '{{instance}} {{zone}}')));
panels.push(ts('Dropped observations / s', 'deepseek_metrics_dropped_total: observations that found no free series and went to the overflow series (totals stay exact).', 'ops',
  [q(`sum by (instance, zone) (rate(deepseek_metrics_dropped_total{${SEL_I}}[${RI}]))`, '{{instance}} {{zone}}')],
  { w: 6, thresholds: thresholds([[null, 'transparent'], [0.000001, 'red']]) }));
panels.push(st('Zone age', 'Time since the zone was created (nginx start or a zone layout change). Reloads that keep the layout do not reset it.', 's',
  q(`min(time() - deepseek_metrics_zone_start_time_seconds{${SEL_I}})`, 'age'), { w: 3 }));
panels.push(st('Reloads', 'Configuration reloads that reused the zone (deepseek_metrics_reloads_total).', 'short',
  q(`sum(deepseek_metrics_reloads_total{${SEL_I}})`, 'reloads'), { w: 3 }));
refIds = 0;
panels.push(new table.PanelBuilder()
  .title('Module and nginx versions')
  .description('deepseek_build_info per instance.')
  .datasource(DS)
  .gridPos({ h: 5, w: 24, x: 0, y: 0 })
  .cellOptions({ type: 'auto' })
  .showHeader(true)
  .withTransformation({ id: 'organize', options: { excludeByName: { Time: true, Value: true, __name__: true } } })
  .withTarget(q(`deepseek_build_info{${SEL_I}}`, '', { instant: true, format: prometheus.PromQueryFormat.Table })));

// ---------------------------------------------------------------- dashboard
const builder = new dashboard.DashboardBuilder('DeepSeek API (nginx)')
  .uid('deepseek-nginx-metrics')
  .description('DeepSeek API traffic proxied by nginx, from ngx_http_deepseek_metrics_module: requests, errors, latency, time to first token, tokens, cost and the module\'s own health.')
  .tags(['deepseek', 'nginx', 'llm'])
  .editable()
  .tooltip(dashboard.DashboardCursorSync.Crosshair)
  .refresh('30s')
  .time({ from: 'now-6h', to: 'now' })
  .timezone('browser')
  .withVariable(vDatasource)
  .withVariable(vInstance)
  .withVariable(vEndpoint)
  .withVariable(vModel)
  .annotation(aBuiltin)
  .annotation(aReload)
  .annotation(aReset)
  .annotation(aMaster);

for (const p of panels) {
  if (p instanceof dashboard.RowBuilder) builder.withRow(p);
  else builder.withPanel(p);
}

const json = builder.build();
// stable panel ids
json.panels.forEach((p, i) => { p.id = i + 1; });
json.id = null;
// Normalise what the SDK emits to the dashboard model Grafana itself saves
// (and @grafana/schema types): numeric builtIn, no interval-only fields on
// non-interval variables, annotation toggles in their default place, no
// table footer (moved out of table options in Grafana 12).
for (const a of json.annotations.list) {
  if (a.builtIn === true) a.builtIn = 1;
  else delete a.builtIn;
  delete a.placement;
}
for (const v of json.templating.list) {
  if (v.type !== 'interval') { delete v.auto; delete v.auto_min; delete v.auto_count; }
  delete v.definition;
}
for (const p of json.panels) {
  if (p.type === 'table' && p.options) delete p.options.footer;
}
// stack the two small module stats on the right of the "Metrics module" row
const zoneAge = json.panels.find((p) => p.title === 'Zone age');
const reloads = json.panels.find((p) => p.title === 'Reloads');
zoneAge.gridPos = { ...zoneAge.gridPos, w: 6 };
reloads.gridPos = { x: zoneAge.gridPos.x, y: zoneAge.gridPos.y + 4, w: 6, h: 4 };
// a balance can be negative (postpaid), its forecast often is: no minimum
delete json.panels.find((p) => p.title === 'Account balance and 24 h forecast').fieldConfig.defaults.min;
json.version = 1;

const text = JSON.stringify(json, null, 2) + '\n';
if (process.argv.includes('--check')) {
  const cur = fs.existsSync(OUT) ? fs.readFileSync(OUT, 'utf8') : '';
  if (cur !== text) {
    console.error('deepseek.json is stale: run `node dashboards/generate.js`');
    process.exit(1);
  }
  console.log('deepseek.json is up to date');
} else if (process.argv.includes('--stdout')) {
  process.stdout.write(text);
} else {
  fs.writeFileSync(OUT, text);
  console.log(`wrote ${OUT}: ${json.panels.length} panels`);
}
