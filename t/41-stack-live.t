#!/usr/bin/perl
# Monitoring stack, live: a real Prometheus scrapes nginx with the module under
# mixed traffic (mock DeepSeek upstream) with the shipped rules loaded.
#  - target up, no scrape error, OpenMetrics negotiated (and gzip), samples scraped
#  - every rule healthy and every rule expression evaluates without error
#  - every dashboard query (panels, annotations, variables) evaluates without
#    error and returns data
#  - the seed article's queries, verbatim, return data
#  - reload / zone-reset annotations see a reload and a zone layout change
use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/lib', dirname(abs_path(__FILE__)) . '/../tools/lib';
use JSON::PP ();
use Time::HiRes qw(time sleep);
use DSM::Test;
use DSM::Stack;

my $REPO = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $MODULE = $ENV{DSM_MODULE} // "$REPO/build/modules/ngx_http_deepseek_metrics_module.so";
plan skip_all => "module not built ($MODULE)" unless -f $MODULE || (defined $ENV{DSM_MODULE} && $ENV{DSM_MODULE} eq '');
plan skip_all => 'prometheus not installed' unless system('command -v prometheus >/dev/null') == 0;
plan skip_all => 'node not installed' unless system('command -v node >/dev/null') == 0;

my $JSON = JSON::PP->new->canonical;
my $dir = DSM::Stack::tempdir();

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
# exemplars on: the latency and TTFT panels show them (docs/exemplars.md)
my %EXEMPLARS = (zone_size => '10m exemplars',
                 http_extra => '    deepseek_metrics_exemplar $request_id;');
$t->write_conf(DSM::Stack::live_conf(%EXEMPLARS));
$t->start;

# some traffic before Prometheus starts, so the first scrapes see every family
my $sent = DSM::Stack::traffic_round($t);
note "first round: $sent requests";

my $metrics = $t->port('METRICS_PORT');
my $prom = DSM::Stack->prometheus(dir => $dir, args => ['--enable-feature=exemplar-storage'],
                                  config => <<"EOF");
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $REPO/alerting/rules/deepseek-recording.yml
  - $REPO/alerting/rules/deepseek-alerts.yml
scrape_configs:
  - job_name: 'deepseek-api'
    metrics_path: '/metrics'
    static_configs:
      - targets: ['127.0.0.1:$metrics']
EOF

# continuous traffic while we look (bounded: 150 s at most, killed at the end)
my $bg = DSM::Stack::background(150, sub { DSM::Stack::traffic_round($t) });

# ------------------------------------------------------------------ target
my $target = DSM::Stack::wait_for('target up', 30, sub {
    my $r = $prom->api('/api/v1/targets');
    my ($tg) = grep { $_->{labels}{job} eq 'deepseek-api' } @{ $r->{data}{activeTargets} || [] };
    return $tg && $tg->{health} eq 'up' && $tg->{lastScrape} !~ /^0001/ ? $tg : undef;
});
ok($target, 'target is up') or diag $JSON->encode($prom->api('/api/v1/targets'));
is($target && $target->{lastError}, '', 'no scrape error');

# enough history for rate() over 1m windows and the rules' first evaluations
sleep 8;

my $samples = $prom->value('scrape_samples_scraped{job="deepseek-api"}');
ok(($samples // 0) > 100, "scrape_samples_scraped = " . ($samples // 'none'));
is($prom->value('up{job="deepseek-api"}'), 1, 'up == 1');

# what Prometheus asked for and got (nginx log of the metrics listener)
my @scrapes = grep { /^Prometheus\// } split /\n/, $t->read_log('scrape.log');
ok(@scrapes >= 3, scalar(@scrapes) . ' scrapes by Prometheus logged');
my ($ua, $accept, $ctype, $cenc, $status) = split /\|/, $scrapes[-1] // '';
like($accept // '', qr{^application/openmetrics-text;\s*version=1\.0\.0}, 'Prometheus asks for OpenMetrics first');
like($ctype // '', qr{^application/openmetrics-text;\s*version=1\.0\.0}, 'the module answers OpenMetrics 1.0.0');
# SPEC: "The export location obeys nginx's own ... gzip" (gzip_types must match the
# MIME type of both formats)
is($cenc, 'gzip', 'scrape is gzip-compressed by nginx');
is($status, 200, 'scrape status 200');

# ------------------------------------------------------------------ rules
my $rules = DSM::Stack::wait_for('rules evaluated', 20, sub {
    my $r = $prom->api('/api/v1/rules');
    my @all = map { @{ $_->{rules} } } @{ $r->{data}{groups} || [] };
    return (@all && !grep { !$_->{lastEvaluation} || $_->{lastEvaluation} =~ /^0001/ } @all) ? \@all : undef;
});
ok($rules && @$rules >= 34, 'rules loaded and evaluated: ' . scalar(@{ $rules || [] }));
my @unhealthy = grep { $_->{health} ne 'ok' || ($_->{lastError} // '') ne '' } @{ $rules || [] };
ok(!@unhealthy, 'every rule healthy') or diag $JSON->encode(\@unhealthy);
my $rule_err = 0;
for my $r (@{ $rules || [] }) {
    my $res = $prom->query_raw($r->{query});
    if ($res->{status} ne 'success') {
        $rule_err++;
        diag "rule $r->{name}: $res->{error}";
    }
}
is($rule_err, 0, 'every rule expression evaluates without error (' . scalar(@{ $rules || [] }) . ')');

# recording rules used by dashboards/cookbook return data
for my $rec (qw(job:deepseek_requests:rate5m job:deepseek_requests:sum_rate5m job:deepseek_requests_5xx:ratio_rate5m
                job_endpoint:deepseek_request_latency_seconds:p99_5m job_endpoint:deepseek_time_to_first_token_seconds:p90_5m
                job_model:deepseek_input_cache_hit:ratio_rate5m job_model_currency:deepseek_cost_per_hour:rate1h
                job_instance_zone:deepseek_metrics_series:used_ratio)) {
    my $res = eval { $prom->query($rec) } || [];
    ok(@$res > 0, "recording rule $rec has data");
}

# ------------------------------------------------------------------ a reload (annotation)
ok($t->reload, 'nginx reload (same zone layout)');
sleep 3;

# ------------------------------------------------------------------ dashboard queries
my @queries = map { $JSON->decode($_) } grep { length } split /\n/, `node $REPO/dashboards/extract-queries.js`;
ok(@queries >= 40, scalar(@queries) . ' dashboard queries');
my (%nodata, %errors);
my $exemplar_panels = 0;
my $now = time;
for my $q (@queries) {
    my $name = "$q->{kind} '$q->{title}'" . ($q->{refId} ? " $q->{refId}" : '');
    next if $q->{kind} eq 'annotation' && $q->{expr} =~ /zone_start_time|master_pid/;   # checked after the reset and restart below
    if ($q->{kind} eq 'variable' && $q->{match}) {
        my $r = $prom->api("/api/v1/label/$q->{label}/values", 'match[]' => $q->{match});
        if ($r->{status} ne 'success') { $errors{$name} = $r->{error} }
        elsif (!@{ $r->{data} }) { $nodata{$name} = $q->{match} }
        next;
    }
    my $r = $q->{instant}
        ? $prom->api('/api/v1/query', query => $q->{expr})
        : $prom->api('/api/v1/query_range', query => $q->{expr}, start => $now - 60, end => $now, step => 5);
    if ($r->{status} ne 'success') { $errors{$name} = "$r->{error}\n  $q->{expr}"; next }
    my $res = $r->{data}{result};
    my $has = ref $res eq 'ARRAY' ? grep { @{ $_->{values} || [] } || $_->{value} } @$res : 1;
    $nodata{$name} = $q->{expr} unless $has;
    next unless $q->{exemplar};
    # what Grafana asks for the exemplar dots of the query
    $r = $prom->api('/api/v1/query_exemplars', query => $q->{expr}, start => $now - 60, end => $now);
    if ($r->{status} ne 'success') { $errors{"$name exemplars"} = "$r->{error}\n  $q->{expr}"; next }
    my @ids = map { $_->{labels}{trace_id} // '' } map { @{ $_->{exemplars} } } @{ $r->{data} || [] };
    $nodata{"$name exemplars"} = $q->{expr} unless @ids && !grep { !/^[0-9a-f]{32}$/ } @ids;
    $exemplar_panels++;
}
is($exemplar_panels, 2, 'exemplars on two panels: latency and TTFT');
is(scalar(keys %errors), 0, 'every dashboard query evaluates without error') or diag join "\n", map { "$_: $errors{$_}" } sort keys %errors;
is(scalar(keys %nodata), 0, 'every dashboard query returns data under traffic') or diag join "\n", map { "$_: $nodata{$_}" } sort keys %nodata;

# ------------------------------------------------------------------ the article's queries, verbatim
my @article = (
    'rate(deepseek_requests_total[1m])',
    'sum(rate(deepseek_requests_total{status="500"}[5m])) / sum(rate(deepseek_requests_total[5m]))',
    'histogram_quantile(0.99, sum(rate(deepseek_request_latency_seconds_bucket[5m])) by (le))',
    'predict_linear(deepseek_requests_total[1h], 3600)',
    'job:deepseek_requests:rate5m',
);
for my $q (@article) {
    my $res = eval { $prom->query($q) };
    ok($res && @$res, "article query returns data: $q") or diag($@ || 'no data');
}
{
    # Grafana's $endpoint variable, one value selected
    my $q = 'rate(deepseek_requests_total{endpoint="$endpoint"}[5m])';
    (my $e = $q) =~ s/\$endpoint/chat_completions/;
    my $res = eval { $prom->query($e) };
    ok($res && @$res, "article query returns data: $q (endpoint=chat_completions)");
    # label_values(deepseek_requests_total, endpoint)
    my $r = $prom->api('/api/v1/label/endpoint/values', 'match[]' => 'deepseek_requests_total');
    ok(($r->{status} eq 'success') && grep({ $_ eq 'chat_completions' } @{ $r->{data} }),
       'label_values(deepseek_requests_total, endpoint): ' . join(',', @{ $r->{data} || [] }));
    # a threshold example: needs > 100 req/s over 5 minutes to return data; must evaluate
    my $raw = $prom->query_raw('rate(deepseek_requests_total[5m]) > 100');
    is($raw->{status}, 'success', 'article query evaluates: rate(deepseek_requests_total[5m]) > 100');
}

# ------------------------------------------------------------------ names in sync with the module
# Every deepseek_* name used by the dashboard, the rules, the cookbook and the
# examples is a metric the module exports (or a _bucket/_sum/_count of one),
# and the dashboard shows every family the module exports.
{
    my $m = $t->scrape(accept => 'openmetrics');
    my %fam = map { $_ => 1 } $m->families;
    my %sample = map { $_->{name} => 1 } $m->all_samples;
    my %known = (%fam, %sample);
    my @files = ("$REPO/dashboards/deepseek.json", glob("$REPO/alerting/rules/*.yml"),
                 "$REPO/docs/promql-cookbook.md", "$REPO/alerting/runbook.md", "$REPO/scripts/demo.sh");
    my %unknown;
    for my $f (@files) {
        my $text = DSM::Stack::slurp($f);
        # (recording rule names level:metric:ops are not metric names)
        for my $name ($text =~ /(?<![:\w])(deepseek_[a-z_]+)(?![:\w])/g) {
            next if $name =~ /^deepseek_metrics(_(zone|price|label|endpoint|export|models|peak_hours|holidays|request_body|stream_unbuffered|exemplar))?$/;   # directives
            next if $name =~ /^deepseek_(api|metrics_module|proxy)/;                      # file/host names
            $unknown{"$name ($f)"}++ unless $known{$name} || $known{"${name}_total"};
        }
    }
    ok(!%unknown, 'every deepseek_* metric name used in dashboards/rules/docs is exported by the module')
        or diag join "\n", sort keys %unknown;
    my $dash = DSM::Stack::slurp("$REPO/dashboards/deepseek.json");
    my @unused = grep { $dash !~ /\b\Q$_\E(_bucket|_sum|_count|_total)?\b/ } sort keys %fam;
    ok(!@unused, 'the dashboard uses every family the module exports (' . scalar(keys %fam) . ')')
        or diag "not on the dashboard: @unused";
}

# ------------------------------------------------------------------ zone reset (annotation)
# A new zone size on reload gives a fresh zone: the "zone resets" annotation must see it.
my $start0 = $prom->value('deepseek_metrics_zone_start_time_seconds');
$t->write_conf(DSM::Stack::live_conf(%EXEMPLARS, zone_size => '12m exemplars'));
ok($t->reload, 'nginx reload with a new zone size');
my $reset = DSM::Stack::wait_for('zone reset seen', 20, sub {
    my $v = $prom->value('deepseek_metrics_zone_start_time_seconds');
    defined $v && defined $start0 && $v != $start0;
});
ok($reset, 'zone start time changed after the layout change');

# ------------------------------------------------------------------ another master (annotation)
# A restart (or a binary upgrade) puts another master behind the zone.
my $master0 = $prom->value('deepseek_metrics_master_pid');
is($master0, $t->master_pid, 'deepseek_metrics_master_pid is the pid of the nginx master');
$t->stop_nginx;
$t->start;
my $master1 = DSM::Stack::wait_for('another master seen', 20, sub {
    my $v = $prom->value('deepseek_metrics_master_pid');
    defined $v && $v == $t->master_pid;
});
ok($master1 && $t->master_pid != $master0, 'the new master pid is scraped after a restart');
for my $q (grep { $_->{kind} eq 'annotation' } @queries) {
    my $r = $prom->api('/api/v1/query_range', query => $q->{expr}, start => time - 120, end => time, step => 1);
    ok($r->{status} eq 'success' && @{ $r->{data}{result} || [] }, "annotation '$q->{title}' finds the event")
        or diag $JSON->encode($r);
}

DSM::Stack::stop_pid($bg);
$prom->stop;
$t->stop;
done_testing;
