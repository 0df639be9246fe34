#!/usr/bin/perl
# Monitoring stack, live: a real Prometheus scrapes nginx with the module under
# mixed traffic (mock DeepSeek upstream) with the shipped rules loaded.
#  - target up, no scrape error, OpenMetrics negotiated (and gzip), samples scraped
#  - every rule healthy and every rule expression evaluates without error
#  - every dashboard query (panels, annotations, variables) evaluates without
#    error and returns data
#  - the seed article's queries, verbatim, return data
#  - reload / zone-reset annotations see a reload and a zone layout change
#  - a second Prometheus 2.42 with --enable-feature=native-histograms scrapes the
#    same zone (native=latency,ttft,gap) in protobuf and stores only the native
#    histogram of those families: the dashboard's quantile and stall queries
#    answer there from the native side and on the default Prometheus from the
#    classic side (each side checked alone), and so do the rules
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
use DSM::Protobuf;
use HTTP::Tiny;

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
# native histograms of latency, TTFT and stream gaps: the native Prometheus
# below stores only those (no _bucket series)
my %EXEMPLARS = (zone_size => '10m exemplars native=latency,ttft,gap',
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
# Debian's 2.42 with native histograms (it asks for protobuf); the query
# string tells its scrapes apart in the scrape log
my $nprom = DSM::Stack->prometheus(dir => $dir, name => 'native',
                                   args => ['--enable-feature=native-histograms,exemplar-storage'],
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
    params:
      from: ['native']
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
my @lines = split /\n/, $t->read_log('scrape.log');
my @scrapes = grep { /^Prometheus\// && !/\|from=native$/ } @lines;
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
# every query of the dashboard on Prometheus $p: (errors, no data, the number
# of exemplar queries, their trace ids)
sub dashboard_queries {
    my ($p, @qs) = @_;
    my (%nodata, %errors, @ids);
    my $exemplar_panels = 0;
    my $now = time;
    for my $q (@qs) {
        my $name = "$q->{kind} '$q->{title}'" . ($q->{refId} ? " $q->{refId}" : '');
        next if $q->{kind} eq 'annotation' && $q->{expr} =~ /zone_start_time|master_pid/;   # checked after the reset and restart below
        if ($q->{kind} eq 'variable' && $q->{match}) {
            my $r = $p->api("/api/v1/label/$q->{label}/values", 'match[]' => $q->{match});
            if ($r->{status} ne 'success') { $errors{$name} = $r->{error} }
            elsif (!@{ $r->{data} }) { $nodata{$name} = $q->{match} }
            next;
        }
        my $has = has_data($p, $q, $q->{expr}, $now);
        if ($has =~ /^error/) { $errors{$name} = "$has\n  $q->{expr}"; next }
        $nodata{$name} = $q->{expr} unless $has;
        next unless $q->{exemplar};
        # what Grafana asks for the exemplar dots of the query
        my $r = $p->api('/api/v1/query_exemplars', query => $q->{expr}, start => $now - 60, end => $now);
        if ($r->{status} ne 'success') { $errors{"$name exemplars"} = "$r->{error}\n  $q->{expr}"; next }
        my @qids = map { $_->{labels}{trace_id} // '' } map { @{ $_->{exemplars} } } @{ $r->{data} || [] };
        $nodata{"$name exemplars"} = $q->{expr} unless @qids && !grep { !/^[0-9a-f]{32}$/ } @qids;
        push @ids, @qids;
        $exemplar_panels++;
    }
    return (\%errors, \%nodata, $exemplar_panels, \@ids);
}

# 1 if the query (range or instant, as the panel asks) returns data, 0 if not,
# "error: ..." if it fails
sub has_data {
    my ($p, $q, $expr, $now) = @_;
    my $r = $q->{instant}
        ? $p->api('/api/v1/query', query => $expr)
        : $p->api('/api/v1/query_range', query => $expr, start => $now - 60, end => $now, step => 5);
    return "error: $r->{error}" if $r->{status} ne 'success';
    my $res = $r->{data}{result};
    return (ref $res eq 'ARRAY' ? grep { @{ $_->{values} || [] } || $_->{value} } @$res : 1) ? 1 : 0;
}

my ($errors, $nodata, $exemplar_panels) = dashboard_queries($prom, @queries);
my %errors = %$errors;
my %nodata = %$nodata;
is($exemplar_panels, 2, 'exemplars on two panels: latency and TTFT');
is(scalar(keys %errors), 0, 'every dashboard query evaluates without error') or diag join "\n", map { "$_: $errors{$_}" } sort keys %errors;
is(scalar(keys %nodata), 0, 'every dashboard query returns data under traffic') or diag join "\n", map { "$_: $nodata{$_}" } sort keys %nodata;

# ------------------------------------------------------------------ native histograms
# The native Prometheus negotiated protobuf and scraped cleanly.
my $ntarget = DSM::Stack::wait_for('native target up', 30, sub {
    my $r = $nprom->api('/api/v1/targets');
    my ($tg) = grep { $_->{labels}{job} eq 'deepseek-api' } @{ $r->{data}{activeTargets} || [] };
    return $tg && $tg->{health} eq 'up' && $tg->{lastScrape} !~ /^0001/ ? $tg : undef;
});
ok($ntarget, 'native Prometheus: target is up');
is($ntarget && $ntarget->{lastError}, '', 'native Prometheus: no scrape error');
my @nscrapes = grep { /^Prometheus\// && /\|from=native$/ } split /\n/, $t->read_log('scrape.log');
my (undef, $naccept, $nctype) = split /\|/, $nscrapes[-1] // '';
like($naccept // '', qr{^application/vnd\.google\.protobuf;proto=io\.prometheus\.client\.MetricFamily;encoding=delimited},
     'native Prometheus asks for protobuf first');
like($nctype // '', qr{^application/vnd\.google\.protobuf; proto=io\.prometheus\.client\.MetricFamily; encoding=delimited},
     'the module answers protobuf');

note('samples per scrape, default / native Prometheus: '
     . join(' / ', map { $_->value('scrape_samples_scraped{job="deepseek-api"}') // 'none' } $prom, $nprom));

# What each Prometheus stores: the native one only the native histogram of a
# native= family (no _bucket, _count, _sum), classic series of the others.
my @stored = (
    # series                                            default native
    [ 'deepseek_request_latency_seconds_bucket',              1, 0 ],
    [ 'deepseek_request_latency_seconds_count',               1, 0 ],
    [ 'deepseek_request_latency_seconds',                     0, 1 ],
    [ 'deepseek_time_to_first_token_seconds_bucket',          1, 0 ],
    [ 'deepseek_time_to_first_token_seconds',                 0, 1 ],
    [ 'deepseek_stream_max_gap_seconds_bucket',               1, 0 ],
    [ 'deepseek_stream_max_gap_seconds',                      0, 1 ],
    [ 'deepseek_queue_wait_seconds_bucket',                   1, 1 ],
    [ 'deepseek_queue_wait_seconds',                          0, 0 ],
);
for my $c (@stored) {
    my ($sel, @want) = @$c;
    my @got = map { my $r = eval { $_->query($sel) } || []; @$r ? 1 : 0 } $prom, $nprom;
    is("@got", "@want", "series $sel stored by the default / native Prometheus");
}

# The dashboard on the native Prometheus: every query answers, but the latency
# heatmap (classic buckets only; documented on the panel). Exemplars too: the
# protobuf body carries them (2.42 keeps one a native histogram a scrape).
my ($nerrors, $nnodata) = dashboard_queries($nprom, @queries);
is(join(', ', sort keys %$nerrors), '', 'native Prometheus: every dashboard query evaluates without error')
    or diag join "\n", map { "$_: $nerrors->{$_}" } sort keys %$nerrors;
is(join(', ', sort keys %$nnodata), "panel 'Request latency heatmap' A",
   'native Prometheus: every dashboard query returns data, but the classic heatmap')
    or diag join "\n", map { "$_: $nnodata->{$_}" } sort keys %$nnodata;

# Each side of the fallback alone: the native side answers where the native
# Prometheus stores a native histogram, the classic side everywhere else.
# (A side is switched off by renaming the other side's series.)
my %NATIVE = map { $_ => 1 } qw(deepseek_request_latency_seconds deepseek_time_to_first_token_seconds
                                deepseek_stream_max_gap_seconds);
my @fallback = grep { ($_->{expr} // '') =~ /\nor / } @queries;
# 15 quantiles on 6 panels, 2 stats, 2 stall shares
is(scalar(@fallback), 19, 'dashboard queries with a native/classic fallback');
my @side_bad;
for my $q (@fallback) {
    my ($family) = $q->{expr} =~ /\b(deepseek_\w+?_seconds)_bucket\{/;
    (my $native_only = $q->{expr}) =~ s/\b(deepseek_\w+?_seconds)_(bucket|count)\{/$1_off_$2\{/g;
    (my $classic_only = $q->{expr}) =~ s/\b(deepseek_\w+?_seconds)\{/$1_off\{/g;
    for my $p ([default => $prom, 0], [native => $nprom, $NATIVE{$family} ? 1 : 0]) {
        my ($pn, $pp, $nat) = @$p;
        my $got = join '', map { has_data($pp, $q, $_, time) } $native_only, $classic_only;
        push @side_bad, "$pn '$q->{title}' $q->{refId}: native/classic sides answered $got, want "
            . ($nat ? '10' : '01') unless $got eq ($nat ? '10' : '01');
    }
}
ok(!@side_bad, 'native side alone answers on the native Prometheus for native= families, classic side alone otherwise')
    or diag join "\n", @side_bad;

# The rules on the native Prometheus: healthy, and the quantile and stall
# rules answer from the native histograms (thresholds dropped to see values).
my $nrules = DSM::Stack::wait_for('native rules evaluated', 20, sub {
    my $r = $nprom->api('/api/v1/rules');
    my @all = map { @{ $_->{rules} } } @{ $r->{data}{groups} || [] };
    return (@all && !grep { !$_->{lastEvaluation} || $_->{lastEvaluation} =~ /^0001/ } @all) ? \@all : undef;
});
my @nunhealthy = grep { $_->{health} ne 'ok' || ($_->{lastError} // '') ne '' } @{ $nrules || [] };
ok($nrules && !@nunhealthy, 'native Prometheus: every rule healthy') or diag $JSON->encode(\@nunhealthy);
my %alert = map { $_->{name} => $_->{query} } grep { $_->{type} eq 'alerting' } @{ $nrules || [] };
for my $al (qw(DeepSeekHighLatencyP99 DeepSeekHighTTFTP90 DeepSeekHighTTFTP99 DeepSeekStreamStalls)) {
    (my $e = $alert{$al} // 'absent') =~ s/ > [0-9.]+$/ >= 0/;
    my $res = eval { $nprom->query($e) } || [];
    ok(@$res > 0, "native Prometheus: alert ${al}'s expression has values") or diag $e;
}
for my $rec (qw(job_endpoint:deepseek_request_latency_seconds:p50_5m job_endpoint:deepseek_request_latency_seconds:p99_5m
                job_endpoint:deepseek_time_to_first_token_seconds:p90_5m job_endpoint:deepseek_time_to_first_token_seconds:p99_5m)) {
    my $res = eval { $nprom->query($rec) } || [];
    ok(@$res > 0, "native Prometheus: recording rule $rec has data");
}

# Federation from the native Prometheus: its /federate answers protobuf when
# asked, with a native family as a native histogram (float counts) and the
# classic ones as untyped series; a global Prometheus 2.42 with native
# histograms (it asks for protobuf) pulls it with honor_labels.
{
    my $PB = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited';
    my $r = HTTP::Tiny->new(timeout => 20)->get($nprom->url . '/federate?match%5B%5D='
        . '%7Bjob%3D%22deepseek-api%22%2C__name__%3D~%22deepseek_(request_latency%7Cqueue_wait)_seconds.*%22%7D',
        { headers => { Accept => $PB } });
    like($r->{headers}{'content-type'} // '', qr{^application/vnd\.google\.protobuf; proto=io\.prometheus\.client\.MetricFamily; encoding=delimited},
         '/federate of the native Prometheus answers protobuf');
    my %type = map { $_->{name} => $_->{type} . (($_->{metrics}[0]{histogram} || {})->{schema} // '') }
               eval { DSM::Protobuf->decode($r->{content}) };
    is(join(' ', map { "$_=$type{$_}" } sort keys %type),
       'deepseek_queue_wait_seconds_bucket=untyped deepseek_queue_wait_seconds_count=untyped '
       . 'deepseek_queue_wait_seconds_sum=untyped deepseek_request_latency_seconds=histogram3',
       '/federate: the native latency histogram (schema 3), the classic queue wait as untyped series');
    my $gprom = DSM::Stack->prometheus(dir => $dir, name => 'global',
                                       args => ['--enable-feature=native-histograms'], config => <<"EOF");
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: 'federate'
    honor_labels: true
    metrics_path: '/federate'
    params:
      'match[]': ['{job="deepseek-api"}']
    static_configs:
      - targets: ['127.0.0.1:@{[ $nprom->port ]}']
EOF
    my $g = DSM::Stack::wait_for('global federates', 20, sub {
        my $res = eval { $gprom->query('deepseek_requests_total') } || [];
        @$res ? $res : undef;
    });
    ok($g, 'global Prometheus: federated counters');
    for my $qq ('histogram_count(sum(deepseek_request_latency_seconds))', 'sum(deepseek_queue_wait_seconds_count)') {
        my $res = eval { $gprom->query($qq) } || [];
        is(scalar(@$res), 1, "global Prometheus answers $qq");
    }
    $gprom->stop;
}

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
$t->write_conf(DSM::Stack::live_conf(%EXEMPLARS, zone_size => '12m exemplars native=latency,ttft,gap'));
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
$nprom->stop;
$prom->stop;
$t->stop;
done_testing;
