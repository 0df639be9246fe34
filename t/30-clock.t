#!/usr/bin/perl
# Issue 8: numbers that depend on the wall clock, exact, with nginx's clock
# frozen and stepped by libfaketime (DONT_FAKE_MONOTONIC: timers run on the real
# monotonic clock, only gettimeofday() is faked):
#   - the price calendar: peak/off-peak at both edges of each range, the weekday
#     of the schedule's utc_offset, weekends, holidays (one in February: the
#     civil-date arithmetic), off-peak prices equal to the peak prices when
#     omitted; the deepseek_cost_total text and $deepseek_cost of every request;
#   - histogram bounds are inclusive: an observation of exactly 1 s is in
#     le="1.0" and not in le="0.5"; buckets are cumulative; +Inf, _sum, _count.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep);
use DSM::Test;

plan(skip_all => "libfaketime not installed ($DSM::Test::FAKETIME_LIB; apt-get install faketime)")
    unless DSM::Test::has_faketime();

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
sub set_clock { $t->set_clock(@_) }
set_clock('2026-12-07 01:00:00');

# prices per 1M tokens; deepseek-v4-pro has no offpeak_ prices: they equal the peak ones
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
%%FAKETIME%%
http {
    deepseek_metrics_zone z:4m buckets=0.5,1,2 tpot_buckets=0.5,1,2;
    deepseek_metrics_price deepseek-flash USD hit=0.011 miss=0.13 output=1.7
                           offpeak_hit=0.005 offpeak_miss=0.07 offpeak_output=0.9;
    deepseek_metrics_price deepseek-v4-pro USD hit=0.019 miss=0.23 output=2.9;
    deepseek_metrics_peak_hours utc_offset=+08:00 days=mon-fri 09:00-12:00 14:00-18:00;
    deepseek_metrics_holidays 2026-12-09 2027-02-01;
    log_format cost '$http_x_case|$deepseek_cost';
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z;
        deepseek_metrics_label case $http_x_case;
        access_log %%PREFIX%%/logs/cost.log cost;
        location / {
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

# ------------------------------------------------------------------ price calendar
# usage of every priced request: 1000 hit, 100 miss, 10 output tokens (or as given)
sub usage_mock { my ($out) = @_; return 'prompt=1100;hit=1000;completion=' . ($out // 10) . ';reasoning=0' }
# 1e-12 units per token = price per 1M tokens x 1e6
my %RATE = (
    'deepseek-flash'  => { peak => [ 11000, 130000, 1700000 ], off => [ 5000, 70000, 900000 ] },
    'deepseek-v4-pro' => { peak => [ 19000, 230000, 2900000 ], off => [ 19000, 230000, 2900000 ] },
);
sub units {
    my ($model, $when, $out) = @_;
    my $r = $RATE{$model}{$when};
    return 1000 * $r->[0] + 100 * $r->[1] + ($out // 10) * $r->[2];
}

# case, UTC time of the request (TZ=UTC), model, expected rate; local time is UTC+08:00
my @CAL = (
    [ 'mon-0859',   '2026-12-07 00:59:59', 'deepseek-flash',  'off'  ],   # Mon 08:59:59 local
    [ 'mon-0900',   '2026-12-07 01:00:00', 'deepseek-flash',  'peak' ],   # start of a range: peak
    [ 'mon-1159',   '2026-12-07 03:59:59', 'deepseek-flash',  'peak' ],
    [ 'mon-1200',   '2026-12-07 04:00:00', 'deepseek-flash',  'off'  ],   # end of a range: off-peak
    [ 'mon-1400',   '2026-12-07 06:00:00', 'deepseek-flash',  'peak' ],
    [ 'mon-1800',   '2026-12-07 10:00:00', 'deepseek-flash',  'off'  ],
    [ 'tue-0030',   '2026-12-07 16:30:00', 'deepseek-flash',  'off'  ],   # Mon 16:30 UTC is peak in UTC
    [ 'fri-1000',   '2026-12-11 02:00:00', 'deepseek-flash',  'peak' ],
    [ 'sat-1000',   '2026-12-12 02:00:00', 'deepseek-flash',  'off'  ],
    [ 'sun-1000',   '2026-12-13 02:00:00', 'deepseek-flash',  'off'  ],
    [ 'holiday',    '2026-12-09 02:00:00', 'deepseek-flash',  'off'  ],   # Wed, a holiday
    [ 'after-hol',  '2026-12-10 02:00:00', 'deepseek-flash',  'peak' ],   # Thu
    [ 'feb-hol',    '2027-02-01 02:00:00', 'deepseek-flash',  'off'  ],   # Mon, a holiday
    [ 'feb-next',   '2027-02-02 02:00:00', 'deepseek-flash',  'peak' ],   # Tue
    [ 'pro-peak',   '2026-12-07 02:00:00', 'deepseek-v4-pro', 'peak' ],
    [ 'pro-off',    '2026-12-12 02:00:00', 'deepseek-v4-pro', 'off'  ],   # omitted offpeak_ = peak
    # 123456 output tokens: a cost with every one of the 12 decimals and units in use
    [ 'big-peak',   '2026-12-07 02:00:00', 'deepseek-v4-pro', 'peak', 123456 ],
    [ 'big-off',    '2026-12-07 04:00:00', 'deepseek-flash',  'off',  123456 ],
);

for my $c (@CAL) {
    my ($case, $ts, $model, undef, $out) = @$c;
    set_clock($ts);
    my $r = $t->chat(model => $model, mock => usage_mock($out), headers => { 'X-Case' => $case });
    is($r->{status}, 200, "$case: 200");
}

sub fmt12 { my ($u) = @_; return sprintf('%d.%012d', int($u / 1e12), $u % 1_000_000_000_000) }
sub fmt9  { my ($u) = @_; $u = int($u / 1000); return sprintf('%d.%09d', int($u / 1e9), $u % 1_000_000_000) }
sub raw_value {
    my ($m, $s) = @_;
    my $line = (split /\n/, $m->raw)[ $s->{line} - 1 ];
    return $line =~ /\s(\S+)$/ ? $1 : '';
}

my $m = $t->scrape_settled(accept => 'openmetrics');
my %log = map { my @f = split /\|/, $_, -1; $f[0] => $f[1] } split /\n/, $t->read_log('cost.log');
for my $c (@CAL) {
    my ($case, $ts, $model, $when, $out) = @$c;
    my $u = units($model, $when, $out);
    my @s = $m->samples('deepseek_cost_total', { case => $case });
    is(scalar(@s), 1, "$case: one cost series");
    is(@s ? raw_value($m, $s[0]) : '', fmt12($u), "$case ($ts UTC, $model): $when rates, cost_total " . fmt12($u));
    is($log{$case}, fmt9($u), "$case: \$deepseek_cost " . fmt9($u));
    is($m->value('deepseek_tokens_total', { case => $case, type => 'input_cache_miss' }), 100, "$case: 100 miss tokens");
}

# ------------------------------------------------------------------ histogram bounds
# the clock is stepped by exactly 1 s while the request waits on the mock, so every
# time of it is exactly 1 s (or 0 s: from the first token to the end)
sub stepped {
    my ($case, $from, $to, %o) = @_;
    set_clock($from);
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) { sleep 0.5; set_clock($to); POSIX::_exit(0) }
    my $r = $t->chat(headers => { 'X-Case' => $case }, %o);
    waitpid($pid, 0);
    is($r->{status}, 200, "$case: 200");
    # the client can see the end before nginx's log phase: the next case must
    # not step the clock back under this request's count
    $t->scrape_settled;
}
# stream: keep-alive comments for 1.5 s, the first data event after the step
stepped('one-second', '2026-12-07 01:00:00', '2026-12-07 01:00:01',
        stream => 1, mock => 'keepalive_ms=1500;keepalive_every_ms=100');
# non-streaming, 5 s after the step: above every bound
stepped('five-seconds', '2026-12-07 01:00:00', '2026-12-07 01:00:05', mock => 'sleep_ms=1500');

$m = $t->scrape_settled(accept => 'openmetrics');
my %H = (
    # family                                          case            le=0.5 le=1.0 le=2.0 +Inf  sum
    deepseek_request_latency_seconds            => [ [ 'one-second',   0, 1, 1, 1, 1 ],
                                                     [ 'five-seconds', 0, 0, 0, 1, 5 ] ],
    deepseek_time_to_first_token_seconds        => [ [ 'one-second',   0, 1, 1, 1, 1 ] ],
    deepseek_time_to_first_answer_token_seconds => [ [ 'one-second',   0, 1, 1, 1, 1 ] ],
    deepseek_queue_wait_seconds                 => [ [ 'one-second',   0, 1, 1, 1, 1 ] ],
    deepseek_time_per_output_token_seconds      => [ [ 'one-second',   1, 1, 1, 1, 0 ] ],
);
for my $fam (sort keys %H) {
    for my $row (@{ $H{$fam} }) {
        my ($case, @want) = @$row;
        my $sum = pop @want;
        my @got = map { $m->value("${fam}_bucket", { case => $case, le => $_ }) } qw(0.5 1.0 2.0 +Inf);
        is("@got", "@want", "$fam\{$case\}: buckets le=0.5,1.0,2.0,+Inf");
        is($m->value("${fam}_count", { case => $case }), $want[-1], "$fam\{$case\}: _count");
        is($m->value("${fam}_sum", { case => $case }), $sum, "$fam\{$case\}: _sum $sum");
    }
}

$t->stop;
done_testing;
