#!/usr/bin/perl
# A currency whose label text needs escaping (a quote, a backslash) accrues cost
# like any other: the series keeps the escaped text, and every priced request
# is compared with it as escaped text too. A plain currency in the same zone is
# the control.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:1m;
    deepseek_metrics_price deepseek-flash 'U"S\\D' hit=1 miss=2 output=3;
    deepseek_metrics_price deepseek-v4-pro USD hit=1 miss=2 output=3;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics z;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

# per request: 100 hit + 200 miss + 30 output tokens at 1/2/3 per 1M tokens
# = 590e-6 currency units = 590e6 units of 1e-12
my $mock = 'prompt=300;hit=100;miss=200;completion=30;reasoning=0';
my $N = 3;
for my $model ('deepseek-flash', 'deepseek-v4-pro') {
    for (1 .. $N) {
        my $r = $t->chat(model => $model, mock => $mock);
        is($r->{status}, 200, "$model: chat completion");
    }
}

my $m = $t->scrape_settled(accept => 'text');

# the exact value text, not the float
sub raw_value {
    my ($sample) = @_;
    my @lines = split /\n/, $m->raw;
    $lines[$sample->{line} - 1] =~ /\s(\S+)$/ or die "no value";
    return $1;
}

my $want = sprintf('0.%012d', $N * 590_000_000);
for my $c ([ 'deepseek-flash', 'U"S\\D' ], [ 'deepseek-v4-pro', 'USD' ]) {
    my ($model, $cur) = @$c;
    is($m->value('deepseek_tokens_total', { model => $model, type => 'output' }), 30 * $N,
       "$model: output tokens counted");
    my @s = $m->samples('deepseek_cost_total', { model => $model });
    is(scalar @s, 1, "$model: one cost series");
    is($s[0] && $s[0]{labels}{currency}, $cur, "$model: currency label is $cur (unescaped by the parser)");
    is($s[0] && raw_value($s[0]), $want, "$model: cost is exactly $N x 0.00059");
}
like($m->raw, qr/currency="U\\"S\\\\D"/, 'the currency is escaped in the exposition');
unlike($t->read_log('error.log'), qr/changed currency/, 'no "changed currency" warning');

$t->stop;
done_testing;
