#!/usr/bin/perl
# Monitoring stack, static checks: every shipped rule, alert, Alertmanager,
# Prometheus, nginx and Kubernetes example is checked by its own tool, and the
# Grafana dashboard validates against a JSON Schema generated from
# @grafana/schema.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Cwd qw(abs_path);
use File::Basename qw(dirname);

my $REPO = abs_path(dirname(abs_path(__FILE__)) . '/..');
chdir $REPO or die;

sub run {
    my (@cmd) = @_;
    my $out = `@cmd 2>&1`;
    return ($? >> 8, $out);
}
sub have { system("command -v $_[0] >/dev/null 2>&1") == 0 }

# the examples are checked with Debian's nginx and the dynamic module, also in the
# static (ASan) run of the suite, where DSM_MODULE is empty
# node packages of dashboards/ (pinned by its package-lock.json), also used by tools/
if (have('node') && have('npm') && !-d 'dashboards/node_modules/yaml') {
    my ($rc, $out) = run('cd dashboards && npm ci --no-audit --no-fund --loglevel=error');
    diag "npm ci in dashboards/ failed:\n$out" if $rc;
}

my $MODULE = $ENV{DSM_MODULE} || "$REPO/build/modules/ngx_http_deepseek_metrics_module.so";

# ------------------------------------------------------------------ rules
SKIP: {
    skip 'promtool not installed', 6 unless have('promtool');
    my ($rc, $out) = run('promtool check rules alerting/rules/*.yml');
    is($rc, 0, 'promtool check rules') or diag $out;
    ($rc, $out) = run('promtool test rules alerting/tests/*.yml');
    is($rc, 0, 'promtool test rules') or diag $out;

    # every alert is tested firing and not firing
    my $alerts = slurp('alerting/rules/deepseek-alerts.yml');
    my @alerts = $alerts =~ /^\s*- alert:\s*(\S+)/mg;
    my $tests = join '', map { slurp($_) } glob 'alerting/tests/*.yml';
    my (%firing, %quiet);
    while ($tests =~ /alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?/g) {
        if ($2) { $quiet{$1}++ } else { $firing{$1}++ }
    }
    my @untested = grep { !$firing{$_} || !$quiet{$_} } @alerts;
    ok(@alerts >= 16 && !@untested, scalar(@alerts) . ' alerts, each tested firing and not firing')
        or diag "not tested both ways: @untested";

    # runbook section, severity and for: per alert
    my $runbook = slurp('alerting/runbook.md');
    my %anchors = map { lc($_) => 1 } $runbook =~ /^## (\S+)\s*$/mg;
    my @bad;
    for my $block (split /\n(?=\s*- alert:)/, $alerts) {
        my ($name) = $block =~ /- alert:\s*(\S+)/ or next;
        my ($url) = $block =~ /runbook_url:\s*"([^"]+)"/;
        push @bad, "$name: no runbook_url" unless $url;
        push @bad, "$name: runbook anchor missing" if $url && !($url =~ /runbook\.md#(\S+)$/ && $anchors{$1});
        push @bad, "$name: no severity" unless $block =~ /severity:\s*(critical|warning|info)\b/;
        push @bad, "$name: no summary/description" unless $block =~ /summary:/ && $block =~ /description:/;
    }
    ok(!@bad, 'every alert has severity, summary, description and a runbook section') or diag join "\n", @bad;

    # the article's pieces
    like($alerts, qr/- alert: HighErrorRate\b.*?humanizePercentage/s, 'HighErrorRate renders a percentage');
    like(slurp('alerting/rules/deepseek-recording.yml'),
         qr/- record: job:deepseek_requests:rate5m\s*\n\s*expr: rate\(deepseek_requests_total\[5m\]\)/,
         "the article's recording rule, verbatim");
}

# ------------------------------------------------------------------ Alertmanager
SKIP: {
    skip 'amtool not installed', 4 unless have('amtool');
    for my $f ('alerting/alertmanager.yml', 'examples/alertmanager/alertmanager.yml') {
        my ($rc, $out) = run("amtool check-config $f");
        is($rc, 0, "amtool check-config $f") or diag $out;
    }
    my ($rc, $out) = run('amtool config routes test --config.file=alerting/alertmanager.yml severity=critical alertname=HighErrorRate');
    like($out, qr/^oncall-pager,team-email\s*$/m, 'critical routes to the pager webhook and e-mail') or diag $out;
    ($rc, $out) = run('amtool config routes test --config.file=alerting/alertmanager.yml severity=warning alertname=DeepSeekRateLimited');
    like($out, qr/^team-email\s*$/m, 'warning routes to e-mail') or diag $out;
}

# ------------------------------------------------------------------ Prometheus examples
SKIP: {
    skip 'promtool not installed', 1 unless have('promtool');
    # prometheus-3.yml has 3.x keys Debian's promtool 2.42 rejects: checked below
    my @files = grep { !m{/prometheus-3\.yml$} } glob 'examples/prometheus/*.yml';
    for my $f (@files) {
        my ($rc, $out) = run("promtool check config $f");
        is($rc, 0, "promtool check config $f") or diag $out;
    }
    my $n242 = slurp('examples/prometheus/prometheus-native-2.42.yml');
    like($n242, qr/--enable-feature=native-histograms,exemplar-storage/, '2.42 native example: the feature flags');
    like($n242, qr/stores ONLY the\s+# native histogram: no _bucket, _sum, _count/, '2.42 native example: says what it loses');
}
SKIP: {
    skip 'node yaml not installed', 1 unless have('node') && -d 'dashboards/node_modules/yaml';
    # valid YAML, and the keys of a Prometheus 3 native-histogram scrape
    my $js = q{const y = require('./dashboards/node_modules/yaml');
        const c = y.parse(require('fs').readFileSync('examples/prometheus/prometheus-3.yml', 'utf8'));
        const j = c.scrape_configs.find((s) => s.job_name === 'deepseek-api');
        console.log([j.scrape_native_histograms, j.scrape_protocols.join(','),
                     j.always_scrape_classic_histograms, j.metrics_path].join(' '));};
    my ($rc, $out) = run("node -e " . quotemeta($js));
    is($out, "true PrometheusProto,OpenMetricsText1.0.0,OpenMetricsText0.0.1,PrometheusText0.0.4 true /metrics\n",
       'prometheus-3.yml: native histograms, protobuf first, classic buckets kept');
    like(slurp('examples/prometheus/prometheus-3.yml'), qr/NOT checked by promtool here/,
         'prometheus-3.yml says promtool 2.42 cannot check it');
    my $fed = slurp('examples/prometheus/global.yml');
    like($fed, qr/honor_labels:\s*true/, 'federation keeps labels (honor_labels)');
    like($fed, qr/'\{job="deepseek-api"\}'/, 'federation match[] as in the article');
    like(slurp('examples/prometheus/prometheus.yml'), qr/--storage\.tsdb\.retention\.time=30d/, 'retention flag documented');
}

# ------------------------------------------------------------------ nginx examples
SKIP: {
    skip "module not built ($MODULE)", 1 unless -f $MODULE;
    my @confs = glob 'examples/nginx/*.conf';
    ok(@confs >= 2, 'nginx examples: ' . join(' ', @confs));
    for my $c (@confs) {
        my ($rc, $out) = run("DSM_MODULE=$MODULE tools/nginx-check-example.sh $c");
        is($rc, 0, "nginx -t $c") or diag $out;
    }
    SKIP: {
        skip 'node not installed', 1 unless have('node') && -d 'dashboards/node_modules/yaml';
        my $d = tempdir(CLEANUP => 1);
        my ($rc, $out) = run("node tools/k8s-manifests.js nginx-conf $d");
        ($rc, $out) = run("DSM_MODULE=$MODULE tools/nginx-check-example.sh $d/nginx.conf") unless $rc;
        is($rc, 0, 'nginx -t on the Kubernetes ConfigMap nginx.conf') or diag $out;
    }
    my $prod = slurp('examples/nginx/production.conf');
    unlike($prod, qr/^\s*proxy_set_header\s+Authorization/m, 'no API key in production.conf (only in the included file)');
    like($prod, qr/include\s+\S*deepseek-api-key\.conf;/, 'the key comes from an included file');
    like($prod, qr/proxy_ssl_server_name\s+on;/, 'SNI to the upstream');
    like($prod, qr/keepalive\s+\d+;/, 'keep-alive upstream pool');
    like($prod, qr/proxy_buffering\s+off;/, 'streaming: proxy_buffering off');
    my ($rt) = $prod =~ /proxy_read_timeout\s+(\d+)s;/;
    ok(($rt // 0) >= 600, "proxy_read_timeout >= 600s ($rt)");
    like($prod, qr/deepseek_metrics_export;.*?allow .*?deny all;/s, 'metrics location restricted by allow/deny');
    like($prod, qr/gzip_types[^;]*openmetrics-text/, 'gzip for the scrape (OpenMetrics too)');
}

# ------------------------------------------------------------------ dashboard + Kubernetes (node)
SKIP: {
    skip 'node/npm not installed', 4 unless have('node') && have('npm');
    my ($rc, $out) = run('dashboards/validate.sh');
    is($rc, 0, 'dashboard validates against the @grafana/schema JSON Schema') or diag $out;
    note $out;

    # the validator is not a rubber stamp: broken copies fail
    my $d = tempdir(CLEANUP => 1);
    my $json = slurp('dashboards/deepseek.json');
    (my $bad1 = $json) =~ s/"type": "timeseries",/"type": "timeseries", "bogusProperty": 1,/;
    (my $bad2 = $json) =~ s/"schemaVersion": \d+/"schemaVersion": "42"/;
    (my $bad3 = $json) =~ s/"legend": \{\s*"displayMode": "table"/"legend": { "displayMode": "sideways"/;
    my $i = 0;
    for my $bad ($bad1, $bad2, $bad3) {
        $i++;
        spew("$d/bad$i.json", $bad);
        my ($brc, $bout) = run("dashboards/validate.sh $d/bad$i.json");
        isnt($brc, 0, "broken dashboard $i is rejected") or diag $bout;
    }

    ($rc, $out) = run('node dashboards/extract-queries.js');
    my @q = split /\n/, $out;
    ok(@q >= 40, scalar(@q) . ' dashboard queries extracted') or diag $out;
    unlike($out, qr/\$(?!__)/, 'no unsubstituted variables');

    ($rc, $out) = run('node tools/k8s-manifests.js check');
    is($rc, 0, 'Kubernetes manifests consistent') or diag $out;
    ($rc, $out) = run('node tools/k8s-manifests.js rules --check');
    is($rc, 0, 'PrometheusRule matches alerting/rules') or diag $out;
    SKIP: {
        skip 'promtool not installed', 1 unless have('promtool');
        my $d2 = tempdir(CLEANUP => 1);
        ($rc, $out) = run("node tools/k8s-manifests.js rules-extract $d2/rules.yml && promtool check rules $d2/rules.yml");
        is($rc, 0, 'the PrometheusRule\'s rules pass promtool check rules') or diag $out;
    }
}

# ------------------------------------------------------------------ docs
{
    my $cook = slurp('docs/promql-cookbook.md');
    for my $q ('rate(deepseek_requests_total[1m])',
               'sum(rate(deepseek_requests_total{status="500"}[5m])) / sum(rate(deepseek_requests_total[5m]))',
               'histogram_quantile(0.99, sum(rate(deepseek_request_latency_seconds_bucket[5m])) by (le))',
               'label_values(deepseek_requests_total, endpoint)',
               'rate(deepseek_requests_total{endpoint="$endpoint"}[5m])',
               'predict_linear(deepseek_requests_total[1h], 3600)') {
        ok(index($cook, $q) >= 0, "cookbook has the article's query verbatim: $q");
    }
    for my $f (qw(docs/sizing.md docs/operations.md docs/architecture.md alerting/runbook.md dashboards/README.md examples/README.md)) {
        ok(-s $f, "$f exists");
    }
}

done_testing;

sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; my $s = <$fh>; return $s }
sub spew { my ($f, $s) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $s; close $fh }
