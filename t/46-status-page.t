#!/usr/bin/perl
# The status page in a real browser: headless Chromium opens the export
# location (Accept: text/html) behind an operator's strict
# Content-Security-Policy, the page's script reads the JSON and renders; the
# test reads the rendered DOM (--dump-dom) and checks what is on screen
# against a scrape of the same traffic: zones, endpoints and models, request,
# error and token counts, cost, and p50/p99 of latency and TTFT computed here
# the way PromQL's histogram_quantile does. Skipped only without chromium
# (scripts/deps.sh installs it).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;
use POSIX qw(WNOHANG);
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);

my $CHROMIUM = $ENV{DSM_CHROMIUM}
    // (grep { -x } map { "$_/chromium" } split /:/, $ENV{PATH})[0];
plan skip_all => 'chromium not installed (scripts/deps.sh installs Debian\'s chromium)'
    unless $CHROMIUM && -x $CHROMIUM;

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone za:1m;
    deepseek_metrics_zone zb:1m buckets=0.05,0.5,5;
    deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.1;
    deepseek_metrics_price deepseek-reasoner USD hit=0.14 miss=0.55 output=2.19;
    deepseek_metrics za;

    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
        location /b/ {
            deepseek_metrics zb;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_set_header Accept-Encoding "";
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        # an operator's own policy on top of the module's: no inline code
        location = /metrics {
            add_header Content-Security-Policy "default-src 'self'" always;
            deepseek_metrics_export;
        }
    }
}
EOF
$t->start;

# ---------------------------------------------------------------- traffic

is($t->chat->{status}, 200, 'chat') for 1 .. 4;
is($t->chat(stream => 1, mock => 'delay_ms=60')->{status}, 200, 'streamed chat') for 1 .. 3;
is($t->chat(model => 'deepseek-reasoner', stream => 1)->{status}, 200, 'reasoner') for 1 .. 2;
is($t->chat(mock => 'status=429')->{status}, 429, 'rate limited');
is($t->chat(model => 'deepseek-reasoner', mock => 'status=503')->{status}, 503, 'overloaded');
is($t->http(GET => '/v1/models')->{status}, 200, 'models');
is($t->chat(path => '/b/chat/completions', model => 'deepseek-v4-pro', stream => 1)->{status}, 200,
   'zb chat') for 1 .. 2;
my $m = $t->scrape_settled(path => '/metrics');

# ---------------------------------------------------------------- what the page should show

# PromQL's histogram_quantile over cumulative [upper bound, count] pairs
sub histogram_quantile {
    my ($q, @b) = @_;
    my $total = $b[-1][1];
    return 'NaN' unless $total > 0;
    my $rank = $q * $total;
    my $i = 0;
    $i++ while $i < $#b && $b[$i][1] < $rank;
    return $b[-2][0] if $i == $#b;
    my ($lo, $below) = $i ? @{ $b[$i - 1] } : (0, 0);
    return $lo + ($b[$i][0] - $lo) * ($rank - $below) / ($b[$i][1] - $below);
}

my %want;    # zone/endpoint/model -> column -> value
for my $s ($m->all_samples) {
    my $l = $s->{labels};
    next unless defined $l->{model};
    my $g = ($want{"$l->{zone}/$l->{endpoint}/$l->{model}"} //= { hist => {} });
    my $n = $s->{name};
    if    ($n eq 'deepseek_requests_total')          { $g->{requests} += $s->{value} }
    elsif ($n eq 'deepseek_errors_total')            { $g->{errors} += $s->{value} }
    elsif ($n eq 'deepseek_tokens_total')            { $g->{$l->{type}} += $s->{value} }
    elsif ($n eq 'deepseek_reasoning_tokens_total')  { $g->{reasoning} += $s->{value} }
    elsif ($n eq 'deepseek_cost_total')              { $g->{cost} += $s->{value} }
    elsif ($n =~ /^deepseek_(request_latency|time_to_first_token)_seconds_bucket$/) {
        $g->{hist}{$1}{$l->{le}} += $s->{value};
    }
}
for my $g (values %want) {
    $g->{$_} //= 0 for qw(requests errors input_cache_hit input_cache_miss output reasoning cost);
    for my $h (['request_latency', 'lat'], ['time_to_first_token', 'ttft']) {
        my $c = $g->{hist}{ $h->[0] } // {};
        my @b = map { [$_ eq '+Inf' ? 9**9**9 : $_, $c->{$_}] }
                sort { ($a eq '+Inf') <=> ($b eq '+Inf') || $a <=> $b } keys %$c;
        $g->{"$h->[1]50"} = @b ? histogram_quantile(0.5, @b) : 'NaN';
        $g->{"$h->[1]99"} = @b ? histogram_quantile(0.99, @b) : 'NaN';
    }
    delete $g->{hist};
}
delete $want{$_} for grep { !$want{$_}{requests} } keys %want;
is(scalar keys %want, 4, 'four endpoint/model groups with requests') or diag explain [sort keys %want];

# ---------------------------------------------------------------- the browser

my $url = 'http://127.0.0.1:' . $t->port('METRICS_PORT') . '/metrics';
my $profile = tempdir('dsm-chromium-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $dom_file = $t->prefix . '/logs/dom.html';

# bounded: virtual time lets the page refresh three times without waiting;
# the browser is killed (its own process group, by PID) if it hangs
sub chromium {
    my (@args) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        setpgrp(0, 0);
        open STDOUT, '>', $dom_file or die;
        open STDERR, '>', $t->prefix . '/logs/chromium.err' or die;
        exec $CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
            '--no-first-run', '--disable-quic', "--user-data-dir=$profile", @args, $url;
        exit 127;
    }
    my $deadline = time + 90;
    while (time < $deadline) {
        return $? if waitpid($pid, WNOHANG) == $pid;
        sleep 0.1;
    }
    kill 'KILL', -$pid;
    waitpid($pid, 0);
    fail('chromium finished within 90 s');
    return -1;
}

is(chromium('--virtual-time-budget=12000', '--dump-dom'), 0, 'chromium --dump-dom: exit 0');
my $dom = do { local $/; open my $f, '<', $dom_file or die "$dom_file: $!"; <$f> } // '';

like($dom, qr{<p id="status" role="status" aria-live="polite">Updated }, 'the page read the JSON (status line)')
    or diag substr($dom, 0, 2000);

# sections by zone; rows by endpoint and model; cells by data-k, exact data-v
my %seen;
my %sections = $dom =~ m{<section data-zone="([^"]*)"[^>]*>(.*?)</section>}sg;
is_deeply([sort keys %sections], ['za', 'zb'], 'a section for each zone');
for my $zone (sort keys %sections) {
    my $sec = $sections{$zone};
    like($sec, qr{<h2>Zone \Q$zone\E</h2>}, "$zone: heading");
    my $used = $m->value('deepseek_metrics_series', { zone => $zone, state => 'used' });
    my $cap = $m->value('deepseek_metrics_series', { zone => $zone, state => 'capacity' });
    like($sec, qr{<dd data-k="series">$used of $cap }, "$zone: series $used of $cap");
    like($sec, qr{<dd data-k="dropped">0\b}, "$zone: no dropped observations");
    like($sec, qr{<dd data-k="in_flight">0</dd>}, "$zone: nothing in flight");

    my ($totals) = $sec =~ m{<table class="totals">(.*?)</table>}s;
    my ($rates) = $sec =~ m{<table class="rates">(.*?)</table>}s;
    ok(defined $totals && defined $rates, "$zone: totals and rates tables") or next;
    like($totals, qr{<th scope="col" class="n">Requests</th>}, "$zone: column headers");
    my @rate_rows = $rates =~ m{<tr data-endpoint="([^"]*)" data-model="([^"]*)">}g;
    for my $row ($totals =~ m{(<tr data-endpoint=.*?</tr>)}sg) {
        my ($ep, $model) = $row =~ m{^<tr data-endpoint="([^"]*)" data-model="([^"]*)">};
        my $key = "$zone/$ep/$model";
        my $w = $want{$key};
        ok($w, "$key: a group with requests in the scrape") or next;
        $seen{$key}++;
        like($row, qr{<th scope="row">\Q$ep\E</th><td>\Q$model\E</td>}, "$key: endpoint and model shown");
        my %cell = $row =~ m{data-k="([^"]+)" data-v="([^"]*)"}g;
        for my $k (qw(requests errors input_cache_hit input_cache_miss output reasoning)) {
            is($cell{$k}, $w->{$k}, "$key: $k $w->{$k}");
        }
        ok(abs(($cell{cost} // -1) - $w->{cost}) < 1e-12, "$key: cost $w->{cost}")
            or diag "page: $cell{cost}";
        for my $k (qw(lat50 lat99 ttft50 ttft99)) {
            if ($w->{$k} eq 'NaN') {
                is($cell{$k}, 'NaN', "$key: $k none");
            } else {
                ok(abs(($cell{$k} // 'NaN') - $w->{$k}) < 1e-9, "$key: $k $w->{$k}")
                    or diag "page: $cell{$k}";
            }
        }
    }
    is(scalar(@rate_rows) / 2, scalar(grep { m{^\Q$zone\E/} } keys %want), "$zone: a rates row per group");
}
is_deeply([sort keys %seen], [sort keys %want], 'every group of the scrape is on the page, once');
is(scalar(grep { $_ != 1 } values %seen), 0, 'no group twice');

# errors by reason
like($dom, qr{<tr data-endpoint="chat_completions" data-model="deepseek-flash" data-reason="rate_limited">.*?data-k="total" data-v="1"}s,
     'errors: rate_limited 1');
like($dom, qr{<tr data-endpoint="chat_completions" data-model="deepseek-reasoner" data-reason="overloaded">.*?data-k="total" data-v="1"}s,
     'errors: overloaded 1');

# a picture for the docs, on request: DSM_SCREENSHOT=docs/status-page.png
# (with traffic running, bounded, so that the rates show something)
if (my $shot = $ENV{DSM_SCREENSHOT}) {
    $shot = $t->repo . "/$shot" unless $shot =~ m{^/};
    my $load = fork // die "fork: $!";
    if (!$load) {
        for my $i (1 .. 200) {
            $t->chat(stream => $i % 2, model => $i % 3 ? 'deepseek-flash' : 'deepseek-reasoner',
                     mock => $i % 17 ? 'delay_ms=' . ($i % 5) * 20 : 'status=429');
        }
        POSIX::_exit(0);
    }
    sleep 1;
    is(chromium('--virtual-time-budget=12000', '--window-size=1400,1100', '--hide-scrollbars',
                "--screenshot=$shot"), 0, "screenshot $shot");
    kill 'TERM', $load;
    waitpid($load, 0);
}

$t->stop;
done_testing;
