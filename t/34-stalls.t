#!/usr/bin/perl
# Issue 11, section 3 "Stalls": deepseek_stream_max_gap_seconds observes, once
# per streamed response, its longest pause between two consecutive data
# events (a stream cut without [DONE]: up to its end), and
# deepseek_keepalives_total counts the SSE comment lines (": keep-alive").
# Keep-alive comments are not data events: they do not end a pause. A
# non-streamed response observes nothing. Bucket bounds are inclusive and the
# pauses are chosen far from every bound, so each lands in one exact bucket.
# histograms= without gap drops the family (keep-alives are still counted);
# gap_buckets= sets its bounds.
#
# The cases run concurrently (forked clients): the file takes about 3 s.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP ();
use DSM::Test;
use DSM::Timed;

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:4m;
    deepseek_metrics_zone nogap:1m histograms=latency,ttft;
    deepseek_metrics_zone custom:1m gap_buckets=1,2;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics_label case $http_x_req_id;
        proxy_set_header Accept-Encoding "";
        location / {
            deepseek_metrics deepseek;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
        }
        location /nogap/ {
            deepseek_metrics nogap;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
        }
        location /custom/ {
            deepseek_metrics custom;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

my $JSON = JSON::PP->new->canonical;
my $F = 'deepseek_stream_max_gap_seconds';

# case, path prefix, stream, X-Mock; then the expected bucket counts (cumulative,
# default bounds) as [le, count] pairs, _count, keep-alives
my @CASES = (
    # 1.3 s after the second event: in le="2.5", not in le="1.0"
    [ 'pause13', '', 1, 'pause_after=2;pause_ms=1300',
      [ [ '1.0', 0 ], [ '2.5', 1 ] ], 1, 0 ],
    # 10 ms between events (far below 0.1 s even on a loaded machine)
    [ 'steady', '', 1, 'delay_ms=10;chunks=3',
      [ [ '0.1', 1 ] ], 1, 0 ],
    # 5 keep-alives before the first event: queue wait, not a pause between events
    [ 'keepalives', '', 1, 'keepalive_ms=1000;keepalive_every_ms=200',
      [ [ '0.1', 1 ] ], 1, 5 ],
    # 2.6 s after the first event with 6 keep-alives during it: they do not end it
    [ 'pause_ka', '', 1, 'pause_after=1;pause_ms=2600;pause_keepalives=1;keepalive_every_ms=500',
      [ [ '2.5', 0 ], [ '5.0', 1 ] ], 1, 6 ],
    # cut 1.3 s after its second event: the pause up to the end counts
    [ 'cut', '', 1, 'pause_after=2;pause_ms=1300;truncate_events=2',
      [ [ '1.0', 0 ], [ '2.5', 1 ] ], 1, 0 ],
    # JSON: nothing observed; its queue keep-alive lines are not SSE comments
    [ 'json', '', 0, 'keepalive_ms=400;keepalive_every_ms=100',
      [], 0, 0 ],
    # zone without the histogram: keep-alives only
    [ 'nogap', '/nogap', 1, 'keepalive_ms=600;keepalive_every_ms=200;pause_after=2;pause_ms=1300',
      undef, 0, 3 ],
    # gap_buckets=1,2: 1.3 s is in le="2.0", not in le="1.0"
    [ 'custom', '/custom', 1, 'pause_after=2;pause_ms=1300',
      [ [ '1.0', 0 ], [ '2.0', 1 ] ], 1, 0 ],
);

my @jobs;
for my $c (@CASES) {
    my ($case, $prefix, $stream, $mock) = @$c;
    push @jobs, $case => sub {
        DSM::Timed::request(port => $t->port('PORT'), path => "$prefix/chat/completions", mock => $mock,
            id => $case,
            body => $JSON->encode({ model => 'deepseek-flash', stream => $stream ? JSON::PP::true : JSON::PP::false,
                                    messages => [ { role => 'user', content => 'hi' } ] }));
    };
}
my $res = DSM::Timed::par($t->prefix, @jobs);
my $m = $t->scrape_settled(accept => 'openmetrics');

for my $c (@CASES) {
    my ($case, undef, undef, undef, $buckets, $count, $ka) = @$c;
    is($res->{$case}{status}, 200, "$case: 200");
    is($m->value('deepseek_requests_total', { case => $case }), 1, "$case: counted once");
    if ($buckets) {
        is($m->value("${F}_bucket", { case => $case, le => $_->[0] }), $_->[1],
           "$case: le=\"$_->[0]\" has $_->[1]") for @$buckets;
        is($m->value("${F}_count", { case => $case }), $count, "$case: _count $count");
        is($m->value("${F}_bucket", { case => $case, le => '+Inf' }), $count, "$case: +Inf $count")
            if $count;
    } else {
        is($m->count("${F}_bucket", { case => $case }), 0, "$case: no gap histogram in its zone");
    }
    is($m->value('deepseek_keepalives_total', { case => $case }), $ka, "$case: $ka keep-alives");
    is($m->count('deepseek_keepalives_total', { case => $case }), $ka ? 1 : 0,
       "$case: keep-alive series " . ($ka ? 'shown' : 'absent when zero'));
}

is($m->type($F), 'histogram', "$F is a histogram");
is($m->type('deepseek_keepalives'), 'counter', 'deepseek_keepalives is a counter (OpenMetrics name)');
is($m->count("${F}_bucket", { case => 'pause13' }), 13, 'default bounds: 12 and +Inf');
is($m->count("${F}_bucket", { case => 'custom' }), 3, 'gap_buckets=1,2: 2 and +Inf');

$t->stop;
done_testing;
