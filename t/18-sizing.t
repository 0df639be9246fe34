#!/usr/bin/perl
# Zone sizing: the bytes a series that `nginx -t` reports follow the
# documented formula (docs/sizing.md), the size it asks for really holds
# max_series label sets, one byte less than needed is refused, and label sets
# beyond max_series go to the overflow series.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;

# record: 40-byte header, 12 slots + 6 counters, each histogram buckets + 2
sub series_bytes {
    my (@hist) = @_;
    my $words = 18;
    $words += $_ + 2 for @hist;
    return 40 + 8 * $words + 128;    # + the key and label text estimate
}

my $buckets16 = join ',', map { $_ / 10 } 1 .. 16;

my @cases = (
    [ 'defaults', '', 300, series_bytes(14, 14, 14, 14, 10, 12) ],
    [ 'latency only, 16 buckets', "histograms=latency buckets=$buckets16", 1000,
      series_bytes(16) ],
    [ 'latency and ttft, 16 buckets', "histograms=latency,ttft buckets=$buckets16",
      500, series_bytes(16, 16) ],
    [ 'latency and the stream gap', 'histograms=latency,gap', 300, series_bytes(14, 12) ],
);

is(series_bytes(14, 14, 14, 14, 10, 12), 1032, 'default layout: 1032 bytes a series');
is(series_bytes(16), 456, 'latency histogram with 16 buckets: 456 bytes a series');

for my $c (@cases) {
    my ($name, $params, $n, $bytes) = @$c;

    my $t = DSM::Test->new(workers => 2);
    my $conf = <<'EOF';
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:%%SIZE%% max_series=%%N%% %%PARAMS%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics z;
            deepseek_metrics_label k $arg_k;
            return 200 "ok\n";
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
    my $write = sub {
        my ($size) = @_;
        (my $c = $conf) =~ s/%%SIZE%%/$size/;
        $c =~ s/%%N%%/$n/;
        $c =~ s/%%PARAMS%%/$params/;
        $t->write_conf($c);
    };

    $write->('64k');
    my ($code, $out) = $t->nginx_t;
    isnt($code, 0, "$name: 64k is too small for max_series=$n");
    like($out, qr/deepseek_metrics_zone|zone "z"/, "$name: the message names the zone");
    my ($per) = $out =~ /\((\d+) bytes a series\)/;
    my ($need) = $out =~ /at least (\d+)k/;
    is($per, $bytes, "$name: $bytes bytes a series, as documented");
    ok($need, "$name: the message gives the size needed (${\ ($need // '?')}k)");

    # the documented estimate: max_series x (bytes + hash head) x slab overhead
    # plus the fixed part (header with the overflow series' dense counters,
    # NGX_MAX_PROCESSES in-flight slots, endpoint table): 308 KB
    my $estimate = ($n * ($bytes + 8) * 4120 / 4096 + 308 * 1024) / 1024;
    cmp_ok(abs(($need // 0) - $estimate), '<', $estimate * 0.05 + 16,
           "$name: ${\ ($need // 0)}k is within 5% of the formula (${\ int $estimate}k)");

    $write->(($need - 8) . 'k');
    ($code, $out) = $t->nginx_t;
    isnt($code, 0, "$name: 8k less than the size asked for is refused");

    $write->("${need}k");
    ($code, $out) = $t->nginx_t;
    is($code, 0, "$name: the size asked for passes nginx -t") or diag $out;

    $t->start;

    my $ok = 0;
    for my $i (1 .. $n + 10) {
        my $r = $t->http(GET => "/x?k=label-set-$i");
        $ok++ if $r->{status} == 200;
    }
    is($ok, $n + 10, "$name: " . ($n + 10) . ' requests answered');

    my $m = $t->scrape_settled;
    is($m->value('deepseek_metrics_series', { zone => 'z', state => 'used' }), $n,
       "$name: all $n label sets fit");
    is($m->value('deepseek_metrics_series', { zone => 'z', state => 'capacity' }), $n,
       "$name: capacity is max_series");
    is($m->value('deepseek_metrics_dropped_total', { zone => 'z' }), 10,
       "$name: the 10 beyond capacity are dropped");
    is($m->value('deepseek_requests_total', { endpoint => '__overflow__' }), 10,
       "$name: and counted in the overflow series");
    is($m->value('deepseek_requests_total', {}), $n + 10, "$name: the total is exact");

    $t->stop;
}

done_testing;
