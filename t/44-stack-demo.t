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
use POSIX ();
use Time::HiRes qw(sleep time);

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
like($out, qr{status page \(a browser\)\s+http://127\.0\.0\.1:\d+/metrics}, 'prints the status page address');
like($out, qr{no terminal: stopping now}, 'without a terminal it stops by itself');
like($out, qr{CNY total: [0-9.]+}, 'live result: the balance read through nginx');
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

# ------------------------------------------------------------------ kept up for a person
# From a terminal (a pseudo-terminal from script(1) here) the demo keeps
# everything running until Ctrl-C (SIGINT), then stops it all by PID.
SKIP: {
    skip 'script(1) not installed', 8 unless system('command -v script >/dev/null') == 0;
    my $kdir = "$dir/keep";
    my $log = "$dir/keep.out";
    my $cmd = "DEMO_DIR=$kdir DEMO_SECONDS=3 DEMO_SKIP_DEPS=1 DEMO_SKIP_BUILD=1 DEMO_FAST_ALERTS=0 $REPO/scripts/demo.sh";
    my $spid = fork // die "fork: $!";
    if (!$spid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        exec 'timeout', '240', 'script', '-qfec', $cmd, $log;
        exit 127;
    }
    my $text = sub { my $t = do { local $/; open my $f, '<', $log or return ''; <$f> } // ''; $t =~ s/\e\[[0-9;]*m//g; $t =~ s/\r//g; $t };
    my $deadline = time + 120;
    sleep 1 while time < $deadline && $text->() !~ /running until Ctrl-C/;
    my $k = $text->();
    like($k, qr/running until Ctrl-C/, 'from a terminal: it stays up') or diag $k;
    my ($mport) = $k =~ m{metrics \(the module\)\s+http://127\.0\.0\.1:(\d+)/metrics};
    sleep 3;
    my $scrape = $mport ? `curl -s http://127.0.0.1:$mport/metrics` : '';
    like($scrape, qr/^deepseek_requests_total\{/m, 'while it is up, the metrics URL answers');
    my @kstarted = $k =~ /started .*? \(pid (\d+)\)/g;
    my %up = reverse($k =~ /started (nginx \(master\)|mock DeepSeek upstream|Prometheus|Alertmanager|webhook receiver|light load while kept up) \(pid (\d+)\)/g);
    is(scalar(keys %up), 6, 'nginx, mock, Prometheus, Alertmanager, webhook and a light load started');
    ok(!grep({ !kill 0, $_ } keys %up), 'they are still running (the bounded demo load is over)') or diag $k;
    my $dpid = do { open my $f, '<', "$kdir/demo.pid" or die; local $/; <$f> };
    chomp $dpid;
    ok(kill('INT', $dpid), "Ctrl-C (SIGINT to demo.sh, pid $dpid)");
    my $end = time + 60;
    while (time < $end) { last if waitpid($spid, POSIX::WNOHANG()) == $spid; sleep 0.2 }
    $k = $text->();
    like($k, qr/stopped nginx \(master\)/, 'Ctrl-C stops nginx') or diag $k;
    my @kalive = grep { kill 0, $_ } @kstarted;
    ok(!@kalive, 'Ctrl-C stops every process it started (' . scalar(@kstarted) . ')') or diag "alive: @kalive";
    ok(!-e "$kdir/nginx/logs/nginx.pid", 'nginx removed its pid file (clean exit)');
}

done_testing;
