#!/usr/bin/perl
# Monitoring stack, the README's main command: scripts/demo.sh (make demo) brings
# up nginx + module + mock upstream, Prometheus with the rules, Alertmanager and
# a webhook receiver, runs a bounded load, prints where to look and live
# results, and stops everything it started.
use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);

my $REPO = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $MODULE = "$REPO/build/modules/ngx_http_deepseek_metrics_module.so";
plan skip_all => "module not built ($MODULE)" unless -f $MODULE;
# the demo always runs Debian's nginx with the dynamic module: the static (ASan)
# run of the suite (DSM_MODULE empty) would only repeat it
plan skip_all => 'demo uses the dynamic module; covered by the dynamic run' if defined $ENV{DSM_MODULE} && $ENV{DSM_MODULE} eq '';
for my $bin (qw(prometheus prometheus-alertmanager node curl jq python3)) {
    plan skip_all => "$bin not installed" unless system("command -v $bin >/dev/null") == 0;
}

my $dir = tempdir('dsm-demo-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{DSM_KEEP});
chmod 0755, $dir;
my $start = time;
my $out = `DEMO_DIR=$dir/demo DEMO_SECONDS=30 DEMO_SKIP_DEPS=1 DEMO_SKIP_BUILD=1 timeout 240 $REPO/scripts/demo.sh 2>&1`;
my $rc = $? >> 8;
my $took = time - $start;
is($rc, 0, "scripts/demo.sh exits 0 (${took}s)") or diag $out;
$out =~ s/\e\[[0-9;]*m//g;

like($out, qr{DeepSeek API through nginx\s+http://127\.0\.0\.1:\d+}, 'prints the API URL');
like($out, qr{metrics \(the module\)\s+http://127\.0\.0\.1:\d+/metrics}, 'prints the metrics URL');
like($out, qr{Prometheus\s+http://127\.0\.0\.1:\d+}, 'prints the Prometheus URL');
like($out, qr{Alertmanager\s+http://127\.0\.0\.1:\d+}, 'prints the Alertmanager URL');
like($out, qr{dashboards/deepseek\.json}, 'says how to get the dashboard');
like($out, qr{chat_completions 200: \d+}, 'live result: requests by endpoint and status');
like($out, qr{error rate, the article's query\n.*\n\s+0\.\d+}, "live result: the article's error rate");
like($out, qr{output: \d+}, 'live result: tokens');
like($out, qr{deepseek-flash USD: [0-9.e-]+}, 'live result: cost');
like($out, qr{HighErrorRate firing}, 'HighErrorRate fires during the demo (shortened timings)');
like($out, qr{oncall-pager FIRING HighErrorRate critical}, 'the webhook receiver got it through Alertmanager');

# everything it started is stopped
my @started = $out =~ /started .*? \(pid (\d+)\)/g;
my @stopped = $out =~ /stopped .*? \(pid (\d+)\)/g;
ok(@started >= 8, scalar(@started) . ' processes started');
my @alive = grep { kill 0, $_ } @started;
ok(!@alive, 'no process left running') or diag "alive: @alive";
like($out, qr/stopped nginx \(master\)/, 'nginx stopped');
ok(!-e "$dir/demo/nginx/logs/nginx.pid", 'nginx removed its pid file (clean exit)');
my $err = do { local $/; open my $f, '<', "$dir/demo/nginx/logs/error.log" or die; <$f> };
unlike($err, qr/\[(alert|emerg|crit)\]|exited on signal/, 'nginx error log clean');

done_testing;
