#!/usr/bin/perl
# Configuration checking: bad configurations fail `nginx -t` with a message that
# names the directive (in the text, or via the "in FILE:LINE" it points to) and
# the problem; good configurations pass `nginx -t`. One good configuration is
# also started, to prove -t's verdict matches a real start.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;

my $t = DSM::Test->new(workers => 1);
# every case here is a configuration failure on purpose: its [emerg] lines are expected
$t->allow(qr/\[emerg\]/);

# a complete configuration from pieces: http-level, server-level, location-level
# directives and the metrics location's body
sub conf {
    my (%o) = @_;
    my $http   = $o{http}   // 'deepseek_metrics_zone z:1m;';
    my $server = $o{server} // '';
    my $loc    = $o{loc}    // 'deepseek_metrics z;';
    my $export = $o{export} // 'deepseek_metrics_export;';
    my $main   = $o{main}   // '';
    return <<"EOF";
%%MODULE%%
$main
%%COMMON%%
http {
$http
    server {
        listen 127.0.0.1:%%PORT%%;
$server
        location / {
$loc
            return 204;
        }
        location = /metrics {
$export
        }
    }
}
EOF
}

# the line of nginx.conf named by "in .../nginx.conf:N" in the output, or ''
sub pointed_line {
    my ($out) = @_;
    return '' unless $out =~ m{ in (\S*nginx\.conf):(\d+)};
    my ($file, $n) = ($1, $2);
    open my $fh, '<', $file or return '';
    my @l = <$fh>;
    close $fh;
    return $l[$n - 1] // '';
}

# bad($name, $directive, $problem_re, %conf)
sub bad {
    my ($name, $directive, $re, %c) = @_;
    $t->write_conf(conf(%c));
    my ($code, $out) = $t->nginx_t;
    isnt($code, 0, "$name: nginx -t fails") or diag $out;
    like($out, qr/\[emerg\]/, "$name: an [emerg] message");
    like($out, $re, "$name: the message states the problem") or diag $out;
    my $line = pointed_line($out);
    my ($msg) = $out =~ /(\[emerg\][^\n]*)/;
    $msg //= '';
    ok(index($msg, $directive) >= 0 || $line =~ /^\s*\Q$directive\E\s/,
       "$name: the message names \"$directive\" (text or the line it points to)")
        or diag "message: $msg\npointed line: $line";
    unlike($out, qr/test is successful/, "$name: no 'test is successful'");
    return $out;
}

sub good {
    my ($name, %c) = @_;
    $t->write_conf(conf(%c));
    my ($code, $out) = $t->nginx_t;
    is($code, 0, "$name: nginx -t passes") or diag $out;
    like($out, qr/test is successful/, "$name: test is successful");
    unlike($out, qr/\[(?:emerg|alert|crit|warn)\]/, "$name: no warnings") or diag $out;
}

# ---------------------------------------------------------------- zone size

{
    my $out = bad('zone too small for max_series', 'deepseek_metrics_zone',
                  qr/zone "z" is too small for max_series=100000\b.*at least (\d+)k/,
                  http => 'deepseek_metrics_zone z:64k max_series=100000;');
    my ($need) = $out =~ /at least (\d+)k/;
    ok(defined $need && $need > 64, 'the size needed is larger than the given one') or diag $out;
    if (defined $need) {
        # the size the message asks for is really enough
        good("size from the message (${need}k) is accepted",
             http => "deepseek_metrics_zone z:${need}k max_series=100000;");
        # and a clearly smaller one is still refused
        my $less = int($need * 0.9);
        bad("90% of the size from the message (${less}k)", 'deepseek_metrics_zone',
            qr/too small for max_series=100000/, http => "deepseek_metrics_zone z:${less}k max_series=100000;");

        # the zone has an in-flight slot for every process nginx can run: the
        # size asked for does not depend on worker_processes
        good("worker_processes 200 with the same size (${need}k)",
             main => 'worker_processes 200;',
             http => "deepseek_metrics_zone z:${need}k max_series=100000;");
    }
}
# native=: 161 counters (1288 bytes) more a label set for each histogram named
{
    my $plain = bad('max_series without native=', 'deepseek_metrics_zone', qr/\((\d+) bytes a series\)/,
                    http => 'deepseek_metrics_zone z:64k max_series=100000;');
    my $native = bad('max_series with native=latency,ttft', 'deepseek_metrics_zone', qr/\((\d+) bytes a series\)/,
                     http => 'deepseek_metrics_zone z:64k max_series=100000 native=latency,ttft;');
    my ($a) = $plain =~ /\((\d+) bytes a series\)/;
    my ($b) = $native =~ /\((\d+) bytes a series\)/;
    is(($b // 0) - ($a // 0), 2 * 161 * 8, 'native=latency,ttft: 2 x 1288 bytes more a series');
    my ($need) = $native =~ /at least (\d+)k/;
    good("native=: the size from the message (${need}k) is accepted",
         http => "deepseek_metrics_zone z:${need}k max_series=100000 native=latency,ttft;") if $need;
}
bad('native= names a histogram histograms= omits', 'deepseek_metrics_zone',
    qr/"native=" names ttft, which "histograms=" omits/,
    http => 'deepseek_metrics_zone z:1m histograms=latency,tpot native=latency,ttft;');
bad('native= unknown histogram', 'deepseek_metrics_zone', qr/unknown histogram "bogus" in "native=latency,bogus"/,
    http => 'deepseek_metrics_zone z:1m native=latency,bogus;');
bad('native= empty', 'deepseek_metrics_zone', qr/empty item in "native="/,
    http => 'deepseek_metrics_zone z:1m native=;');
bad('native= given twice', 'deepseek_metrics_zone', qr/duplicate parameter "native=ttft"/,
    http => 'deepseek_metrics_zone z:1m native=latency native=ttft;');
good('native= naming every histogram', http => 'deepseek_metrics_zone z:1m native=latency,ttft,answer,queue,tpot,gap;');

bad('zone below the minimum size', 'deepseek_metrics_zone', qr/zone "z:4k" is too small/,
    http => 'deepseek_metrics_zone z:4k;');
bad('zone without size', 'deepseek_metrics_zone', qr/invalid zone "z", expected NAME:SIZE/,
    http => 'deepseek_metrics_zone z;');
bad('zone bad size', 'deepseek_metrics_zone', qr/invalid zone size "z:lots"/,
    http => 'deepseek_metrics_zone z:lots;');

# ---------------------------------------------------------------- unknown zones

bad('unknown zone in deepseek_metrics', 'deepseek_metrics',
    qr/"deepseek_metrics" directive: unknown zone "nosuch", declare it with "deepseek_metrics_zone"/,
    loc => 'deepseek_metrics nosuch;');
bad('unknown zone in deepseek_metrics_export', 'deepseek_metrics',
    qr/unknown zone "nosuch2", declare it with "deepseek_metrics_zone"/,
    export => 'deepseek_metrics_export z nosuch2;');
{
    $t->write_conf(conf(export => 'deepseek_metrics_export z nosuch3;'));
    my (undef, $out) = $t->nginx_t;
    my ($msg) = $out =~ /(\[emerg\][^\n]*)/;
    $msg //= '';
    like($msg, qr/deepseek_metrics_export/, 'unknown zone in deepseek_metrics_export: message names deepseek_metrics_export')
        or diag $msg;
    like(pointed_line($out), qr/deepseek_metrics_export z nosuch3/, 'unknown zone: message points to the line');
}
bad('unknown zone, no zone declared at all', 'deepseek_metrics',
    qr/unknown zone "z"/, http => '');

# ---------------------------------------------------------------- buckets

bad('buckets not increasing', 'deepseek_metrics_zone', qr/buckets in "0\.1,0\.5,0\.5,1" must increase strictly/,
    http => 'deepseek_metrics_zone z:1m buckets=0.1,0.5,0.5,1;');
bad('buckets decreasing', 'deepseek_metrics_zone', qr/must increase strictly/,
    http => 'deepseek_metrics_zone z:1m buckets=1,0.5;');
bad('negative bucket', 'deepseek_metrics_zone', qr/invalid bucket "-1"/,
    http => 'deepseek_metrics_zone z:1m buckets=-1,1;');
bad('zero bucket', 'deepseek_metrics_zone', qr/invalid bucket "0"/,
    http => 'deepseek_metrics_zone z:1m buckets=0,1;');
bad('non-number bucket', 'deepseek_metrics_zone', qr/invalid bucket "abc"/,
    http => 'deepseek_metrics_zone z:1m buckets=0.1,abc;');
bad('bucket with 7 decimals', 'deepseek_metrics_zone', qr/invalid bucket "0\.0000001"/,
    http => 'deepseek_metrics_zone z:1m buckets=0.0000001,1;');
bad('empty bucket item', 'deepseek_metrics_zone', qr/empty bucket in "0\.1,,1": a stray comma/,
    http => 'deepseek_metrics_zone z:1m buckets=0.1,,1;');
bad('no buckets', 'deepseek_metrics_zone', qr/no buckets in ""/,
    http => 'deepseek_metrics_zone z:1m buckets=;');
bad('33 buckets', 'deepseek_metrics_zone', qr/too many buckets .*at most 32/,
    http => 'deepseek_metrics_zone z:1m buckets=' . join(',', 1 .. 33) . ';');
good('32 buckets', http => 'deepseek_metrics_zone z:1m buckets=' . join(',', 1 .. 32) . ';');
bad('bad tpot_buckets', 'deepseek_metrics_zone', qr/must increase strictly/,
    http => 'deepseek_metrics_zone z:1m tpot_buckets=0.01,0.001;');
bad('unknown histogram', 'deepseek_metrics_zone', qr/unknown histogram "bogus"/,
    http => 'deepseek_metrics_zone z:1m histograms=latency,bogus;');

# ---------------------------------------------------------------- zone parameters

bad('max_series=0', 'deepseek_metrics_zone', qr/invalid max_series "max_series=0"/,
    http => 'deepseek_metrics_zone z:1m max_series=0;');
bad('max_series=-5', 'deepseek_metrics_zone', qr/invalid max_series "max_series=-5"/,
    http => 'deepseek_metrics_zone z:1m max_series=-5;');
bad('max_series=abc', 'deepseek_metrics_zone', qr/invalid max_series "max_series=abc"/,
    http => 'deepseek_metrics_zone z:1m max_series=abc;');
bad('max_series=', 'deepseek_metrics_zone', qr/invalid max_series "max_series="/,
    http => 'deepseek_metrics_zone z:1m max_series=;');
bad('unknown zone parameter', 'deepseek_metrics_zone',
    qr/invalid parameter "colour=blue", expected max_series=, buckets=, tpot_buckets=, gap_buckets=, histograms=, native= or exemplars/,
    http => 'deepseek_metrics_zone z:1m colour=blue;');
bad('buckets= given twice', 'deepseek_metrics_zone', qr/duplicate parameter "buckets=1,2"/,
    http => 'deepseek_metrics_zone z:1m buckets=0.5,1 buckets=1,2;');
bad('max_series= given twice', 'deepseek_metrics_zone', qr/duplicate parameter "max_series=20"/,
    http => 'deepseek_metrics_zone z:1m max_series=10 max_series=20;');
bad('buckets with a trailing comma', 'deepseek_metrics_zone', qr/empty bucket in "0\.1,0\.5,": a stray comma/,
    http => 'deepseek_metrics_zone z:1m buckets=0.1,0.5,;');
bad('tpot_buckets with a trailing comma', 'deepseek_metrics_zone', qr/empty bucket in "0\.01,": a stray comma/,
    http => 'deepseek_metrics_zone z:1m tpot_buckets=0.01,;');
bad('histograms with a trailing comma', 'deepseek_metrics_zone', qr/empty item in "histograms=latency,ttft,"/,
    http => 'deepseek_metrics_zone z:1m histograms=latency,ttft,;');
bad('histograms= empty', 'deepseek_metrics_zone', qr/empty item in "histograms="/,
    http => 'deepseek_metrics_zone z:1m histograms=;');
bad('tpot_buckets while histograms= omits tpot', 'deepseek_metrics_zone',
    qr/"tpot_buckets=" has no effect: "histograms=" omits tpot/,
    http => 'deepseek_metrics_zone z:1m tpot_buckets=0.01,0.1 histograms=latency,ttft;');
bad('tpot_buckets (before histograms=) while it omits tpot', 'deepseek_metrics_zone',
    qr/"tpot_buckets=" has no effect/,
    http => 'deepseek_metrics_zone z:1m histograms=latency tpot_buckets=0.01;');
good('tpot_buckets with histograms= naming tpot',
     http => 'deepseek_metrics_zone z:1m histograms=latency,tpot tpot_buckets=0.01,0.1;');
bad('gap_buckets while histograms= omits gap', 'deepseek_metrics_zone',
    qr/"gap_buckets=" has no effect: "histograms=" omits gap/,
    http => 'deepseek_metrics_zone z:1m gap_buckets=1,10 histograms=latency,tpot;');
bad('gap_buckets not increasing', 'deepseek_metrics_zone', qr/buckets in "10,1" must increase strictly/,
    http => 'deepseek_metrics_zone z:1m gap_buckets=10,1;');
bad('gap_buckets given twice', 'deepseek_metrics_zone', qr/duplicate parameter "gap_buckets=2"/,
    http => 'deepseek_metrics_zone z:1m gap_buckets=1 gap_buckets=2;');
good('gap_buckets with histograms= naming gap',
     http => 'deepseek_metrics_zone z:1m histograms=latency,gap gap_buckets=1,10,60;');
bad('duplicate zone', 'deepseek_metrics_zone', qr/duplicate zone "z"/,
    http => "deepseek_metrics_zone z:1m;\ndeepseek_metrics_zone z:2m;");
bad('duplicate zone, same size', 'deepseek_metrics_zone', qr/duplicate zone "z"/,
    http => "deepseek_metrics_zone z:1m;\ndeepseek_metrics_zone z:1m;");

# ---------------------------------------------------------------- labels

for my $n ('1abc', 'a-b', 'a.b', 'ä') {
    bad("invalid label name $n", 'deepseek_metrics_label', qr/invalid label name "\Q$n\E"/,
        loc => "deepseek_metrics z;\ndeepseek_metrics_label $n x;");
}
bad('label name of 65 characters', 'deepseek_metrics_label', qr/invalid label name/,
    loc => "deepseek_metrics z;\ndeepseek_metrics_label " . ('a' x 65) . " x;");
good('label name of 64 characters', loc => "deepseek_metrics z;\ndeepseek_metrics_label " . ('a' x 64) . " x;");
for my $n (qw(le quantile __x __ endpoint model status type currency reason zone state version nginx_version)) {
    bad("reserved label name $n", 'deepseek_metrics_label', qr/label name "\Q$n\E" is reserved/,
        loc => "deepseek_metrics z;\ndeepseek_metrics_label $n x;");
}
bad('duplicate label', 'deepseek_metrics_label', qr/duplicate label "team"/,
    loc => "deepseek_metrics z;\ndeepseek_metrics_label team a;\ndeepseek_metrics_label team b;");
bad('9 labels on one level', 'deepseek_metrics_label', qr/too many labels: at most 8/,
    loc => "deepseek_metrics z;\n" . join('', map { "deepseek_metrics_label l$_ v;\n" } 1 .. 9));
bad('label without value', 'deepseek_metrics_label', qr/invalid number of arguments in "deepseek_metrics_label"/,
    loc => "deepseek_metrics z;\ndeepseek_metrics_label team;");

# ---------------------------------------------------------------- context and duplicates

bad('deepseek_metrics_export in http', 'deepseek_metrics_export',
    qr/"deepseek_metrics_export" directive is not allowed here/,
    http => "deepseek_metrics_zone z:1m;\ndeepseek_metrics_export;");
bad('deepseek_metrics_export in server', 'deepseek_metrics_export',
    qr/"deepseek_metrics_export" directive is not allowed here/,
    server => 'deepseek_metrics_export z;');
bad('deepseek_metrics_zone in server', 'deepseek_metrics_zone',
    qr/"deepseek_metrics_zone" directive is not allowed here/,
    server => 'deepseek_metrics_zone y:1m;');
bad('deepseek_metrics_zone in location', 'deepseek_metrics_zone',
    qr/"deepseek_metrics_zone" directive is not allowed here/,
    loc => "deepseek_metrics z;\ndeepseek_metrics_zone y:1m;");
bad('duplicate deepseek_metrics in one location', 'deepseek_metrics',
    qr/"deepseek_metrics" directive is duplicate/,
    loc => "deepseek_metrics z;\ndeepseek_metrics z;");
bad('deepseek_metrics off + zone in one location', 'deepseek_metrics',
    qr/"deepseek_metrics" directive is duplicate/,
    loc => "deepseek_metrics off;\ndeepseek_metrics z;");
bad('deepseek_metrics without argument', 'deepseek_metrics',
    qr/invalid number of arguments in "deepseek_metrics"/, loc => 'deepseek_metrics;');
bad('duplicate deepseek_metrics_export', 'deepseek_metrics_export',
    qr/"deepseek_metrics_export" directive is duplicate/,
    export => "deepseek_metrics_export;\ndeepseek_metrics_export z;");
bad('duplicate deepseek_metrics_endpoint', 'deepseek_metrics_endpoint',
    qr/"deepseek_metrics_endpoint" directive is duplicate/,
    loc => "deepseek_metrics z;\ndeepseek_metrics_endpoint a;\ndeepseek_metrics_endpoint b;");
bad('empty deepseek_metrics_endpoint', 'deepseek_metrics_endpoint', qr/non-empty value/,
    loc => "deepseek_metrics z;\ndeepseek_metrics_endpoint \"\";");
bad('deepseek_metrics_models in server', 'deepseek_metrics_models',
    qr/"deepseek_metrics_models" directive is not allowed here/, server => 'deepseek_metrics_models a;');
bad('model name of 64 bytes', 'deepseek_metrics_models', qr/invalid model name/,
    http => "deepseek_metrics_zone z:1m;\ndeepseek_metrics_models " . ('m' x 64) . ";");

# ---------------------------------------------------------------- prices, peak hours, holidays

my $Z = "deepseek_metrics_zone z:1m;\n";
bad('price hit=abc', 'deepseek_metrics_price', qr/invalid price "hit=abc"/,
    http => $Z . 'deepseek_metrics_price deepseek-flash USD hit=abc miss=0.27 output=1.10;');
bad('price without output=', 'deepseek_metrics_price', qr/price of "deepseek-flash" needs hit=, miss= and output=/,
    http => $Z . 'deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27;');
bad('price negative', 'deepseek_metrics_price', qr/invalid price "miss=-1"/,
    http => $Z . 'deepseek_metrics_price deepseek-flash USD hit=0.07 miss=-1 output=1.10;');
bad('price unknown key', 'deepseek_metrics_price', qr/invalid price "input=1"/,
    http => $Z . 'deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10 input=1;');
bad('duplicate price for a model', 'deepseek_metrics_price', qr/duplicate price for model "deepseek-flash"/,
    http => $Z . "deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10;\n"
               . "deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10;");
bad('peak hours 25:00-26:00', 'deepseek_metrics_peak_hours', qr/invalid parameter "25:00-26:00"/,
    http => $Z . 'deepseek_metrics_peak_hours 25:00-26:00;');
bad('peak hours 12:00-09:00', 'deepseek_metrics_peak_hours', qr/invalid parameter "12:00-09:00".*end after start/,
    http => $Z . 'deepseek_metrics_peak_hours 12:00-09:00;');
bad('peak hours 09:60-10:00', 'deepseek_metrics_peak_hours', qr/invalid parameter "09:60-10:00"/,
    http => $Z . 'deepseek_metrics_peak_hours 09:60-10:00;');
bad('peak hours 9-12', 'deepseek_metrics_peak_hours', qr/invalid parameter "9-12"/,
    http => $Z . 'deepseek_metrics_peak_hours 9-12;');
bad('peak hours bad utc_offset', 'deepseek_metrics_peak_hours', qr/invalid parameter "utc_offset=8"/,
    http => $Z . 'deepseek_metrics_peak_hours utc_offset=8 09:00-12:00;');
bad('peak hours bad days', 'deepseek_metrics_peak_hours', qr/invalid parameter "days=funday"/,
    http => $Z . 'deepseek_metrics_peak_hours days=funday 09:00-12:00;');
bad('peak hours days= with no days', 'deepseek_metrics_peak_hours', qr/invalid parameter "days="/,
    http => $Z . 'deepseek_metrics_peak_hours days= 09:00-12:00;');
bad('peak hours days= with a trailing comma', 'deepseek_metrics_peak_hours', qr/invalid parameter "days=mon,"/,
    http => $Z . 'deepseek_metrics_peak_hours days=mon, 09:00-12:00;');
bad('peak hours days= given twice', 'deepseek_metrics_peak_hours', qr/duplicate parameter "days=sat"/,
    http => $Z . 'deepseek_metrics_peak_hours days=mon-fri days=sat 09:00-12:00;');
bad('peak hours utc_offset= given twice', 'deepseek_metrics_peak_hours', qr/duplicate parameter "utc_offset=\+01:00"/,
    http => $Z . 'deepseek_metrics_peak_hours utc_offset=+08:00 utc_offset=+01:00 09:00-12:00;');
bad('holidays without peak hours', 'deepseek_metrics_holidays',
    qr/"deepseek_metrics_holidays" has no effect without "deepseek_metrics_peak_hours"/,
    http => $Z . "deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10;\n"
               . 'deepseek_metrics_holidays 2025-01-01;');
bad('price hit= given twice', 'deepseek_metrics_price', qr/duplicate price "hit=0\.08" for model "deepseek-flash"/,
    http => $Z . 'deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10 hit=0.08;');
bad('price offpeak_output= given twice', 'deepseek_metrics_price', qr/duplicate price "offpeak_output=2"/,
    http => $Z . 'deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10 '
               . 'offpeak_output=1 offpeak_output=2;');
bad('price for a model the allowlist turns into other', 'deepseek_metrics_price',
    qr/"deepseek_metrics_price" for model "deepseek-flash" never applies: the model allowlist turns it into "other"/,
    http => $Z . "deepseek_metrics_models deepseek-v4-pro;\n"
               . 'deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10;');
bad('price for a misspelt model (default allowlist)', 'deepseek_metrics_price',
    qr/"deepseek_metrics_price" for model "deepseek-flsh" never applies/,
    http => $Z . 'deepseek_metrics_price deepseek-flsh USD hit=0.07 miss=0.27 output=1.10;');
good('prices for "other" and "unknown" (model label values)',
     http => $Z . "deepseek_metrics_models deepseek-v4-pro;\n"
                . "deepseek_metrics_price other USD hit=0.07 miss=0.27 output=1.10;\n"
                . "deepseek_metrics_price unknown USD hit=0.07 miss=0.27 output=1.10;\n"
                . 'deepseek_metrics_price deepseek-v4-pro USD hit=0.5 miss=2 output=8;');
{
    # off-peak prices without a schedule: accepted, with a [warn] naming what is missing
    $t->write_conf(conf(http => $Z . 'deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 '
                                   . 'output=1.10 offpeak_hit=0.035;'));
    my ($code, $out) = $t->nginx_t;
    is($code, 0, 'off-peak prices without peak hours: nginx -t passes') or diag $out;
    like($out, qr/\[warn\] [^\n]*"deepseek_metrics_price" off-peak prices have no effect without "deepseek_metrics_peak_hours"/,
         'off-peak prices without peak hours: a [warn] names deepseek_metrics_peak_hours') or diag $out;
}
bad('peak hours without ranges', 'deepseek_metrics_peak_hours', qr/no peak ranges given/,
    http => $Z . 'deepseek_metrics_peak_hours utc_offset=+08:00;');
bad('holiday 2025-13-01', 'deepseek_metrics_holidays', qr/invalid holiday "2025-13-01": expected YYYY-MM-DD/,
    http => $Z . 'deepseek_metrics_holidays 2025-01-01 2025-13-01;');
bad('holiday 2025/01/01', 'deepseek_metrics_holidays', qr/invalid holiday "2025\/01\/01"/,
    http => $Z . 'deepseek_metrics_holidays 2025/01/01;');
bad('holiday 2025-1-1', 'deepseek_metrics_holidays', qr/invalid holiday "2025-1-1"/,
    http => $Z . 'deepseek_metrics_holidays 2025-1-1;');
bad('holiday 2025-01-00', 'deepseek_metrics_holidays', qr/invalid holiday "2025-01-00"/,
    http => $Z . 'deepseek_metrics_holidays 2025-01-00;');
{
    for my $d ('2025-02-30', '2025-04-31') {
        $t->write_conf(conf(http => $Z . "deepseek_metrics_holidays $d;"));
        my ($code, $out) = $t->nginx_t;
        isnt($code, 0, "holiday $d (no such date): nginx -t fails");
        like($out, qr/invalid holiday "\Q$d\E"/, "holiday $d: message names the date");
    }
}

# ---------------------------------------------------------------- good configurations

good('minimal');
good('several zones',
     http => "deepseek_metrics_zone a:1m;\ndeepseek_metrics_zone b:2m max_series=500;\n"
           . "deepseek_metrics_zone c:1m buckets=0.5,1,2.5 tpot_buckets=0.01,0.1 histograms=latency,ttft,tpot;",
     server => 'deepseek_metrics b;',
     loc => 'deepseek_metrics a;',
     export => 'deepseek_metrics_export a c;');
good('labels at several levels, off, endpoint with variables',
     http => "deepseek_metrics_zone z:1m;\ndeepseek_metrics z;\ndeepseek_metrics_label team core;\n"
           . "deepseek_metrics_endpoint \$uri;",
     server => "deepseek_metrics_label tenant \$host;\ndeepseek_metrics_label app_1 \"x \$arg_a y\";",
     loc => "deepseek_metrics_label team \$http_x_team;\ndeepseek_metrics_label _private v;\n"
          . "deepseek_metrics_endpoint chat;\n"
          . join('', map { "deepseek_metrics_label L$_ v;\n" } 3 .. 8));
good('deepseek_metrics off',
     loc => 'deepseek_metrics off;', server => 'deepseek_metrics z;');
good('prices, peak hours, holidays, models',
     http => $Z
           . "deepseek_metrics_models deepseek-flash deepseek-v4-pro my.odd+model;\n"
           . "deepseek_metrics_price deepseek-flash USD hit=0.07 miss=0.27 output=1.10 "
           . "offpeak_hit=0.035 offpeak_miss=0.135 offpeak_output=0.55;\n"
           . "deepseek_metrics_price deepseek-v4-pro CNY hit=0.5 miss=2 output=8;\n"
           . "deepseek_metrics_peak_hours utc_offset=+08:00 days=mon-fri 08:30-12:00 13:00-24:00;\n"
           . "deepseek_metrics_holidays 2025-01-01 2025-10-01 2024-02-29;");
good('peak hours, negative offset, wrapping days',
     http => $Z . "deepseek_metrics_peak_hours utc_offset=-05:30 days=sat-mon,wed 00:00-24:00;");
good('export with a zone list', http => "deepseek_metrics_zone z:1m;\ndeepseek_metrics_zone y:1m;",
     export => 'deepseek_metrics_export z y;');
good('request_body and stream_unbuffered switches',
     loc => "deepseek_metrics z;\ndeepseek_metrics_request_body off;\ndeepseek_metrics_stream_unbuffered off;");

# ---------------------------------------------------------------- -t agrees with a real start

$t->write_conf(conf(http => "deepseek_metrics_zone z:1m;\ndeepseek_metrics_zone y:1m max_series=50;",
                    loc => "deepseek_metrics y;\ndeepseek_metrics_label team t1;"));
my ($code, $out) = $t->nginx_t;
is($code, 0, 'final configuration: nginx -t passes') or diag $out;
$t->start;
my $r = $t->http(GET => '/v1/models');
is($r->{status}, 204, 'a request through the started configuration');
my $m = $t->scrape(port => $t->port('PORT'));
is($m->value('deepseek_requests_total', { zone => 'y', endpoint => 'models', status => '204', team => 't1' }), 1,
   'counted in zone y with its label');
is($m->value('deepseek_metrics_series', { zone => 'y', state => 'capacity' }), 50, 'zone y capacity = max_series');
$t->stop;

done_testing;
