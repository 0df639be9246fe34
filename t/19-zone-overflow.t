#!/usr/bin/perl
# One label set that sees 397 distinct statuses loses no request: the series
# keeps 10 statuses in its slots (the last 2 are kept for failure reasons), a
# request whose status finds no slot goes whole (status, latency, reasons) to
# the overflow series, which counts every status 0..999 and every reason
# densely.  sum(requests_total) == sum(latency _count) == requests, per series
# too; dropped_total counts exactly what went to the overflow series.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:1m;

    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export z; }
    }
}
EOF
$t->start;

my %ls = (endpoint => 'chat_completions', model => 'deepseek-flash');
my %ov = (endpoint => '__overflow__', model => '__overflow__');

# every status 200..599 but those that may carry no body
my @statuses = grep { $_ != 204 && $_ != 205 && $_ != 304 } 200 .. 599;
is(scalar(@statuses), 397, '397 distinct statuses');

my $bad = 0;
for my $s (@statuses) {
    my $r = $t->chat(mock => "status=$s");
    $bad++ unless $r->{status} == $s;
}
is($bad, 0, 'each answered with its status');

# three more 200s: status 200 has a slot
$t->chat for 1 .. 3;

# failure reasons of the label set: the 2 slots kept for them, then the overflow
my $r = $t->chat(mock => 'no_usage=1');
is($r->{status}, 200, 'a 200 without usage');
$r = $t->chat(stream => 1, mock => 'truncate_events=2');
is($r->{status}, 200, 'a 200 stream cut after 2 events');

my $N = @statuses + 5;
my $m = $t->scrape_settled;

# the first 10 distinct statuses have slots, the rest went to the overflow
my @first = @statuses[0 .. 9];
my @rest = @statuses[10 .. $#statuses];
is($m->count('deepseek_requests_total', \%ls), 10, 'the series keeps 10 statuses');
is($m->value('deepseek_requests_total', { %ls, status => '200' }), 6, 'status 200: 1 + 3 + 2 in the series');
is($m->value('deepseek_requests_total', { %ls, status => qr/^(?!200$)/ }), 9, 'its 9 other statuses once each');
is($m->count('deepseek_requests_total', \%ov), scalar(@rest), 'the overflow series has the other ' . scalar(@rest));
is($m->value('deepseek_requests_total', { %ov, status => $rest[-1] }), 1, "status $rest[-1] in the overflow series");
is($m->value('deepseek_requests_total', \%ov), scalar(@rest), 'the overflow series: each once');

# exact sums, overall and per series
is($m->value('deepseek_requests_total'), $N, "sum(requests_total) == $N requests");
is($m->value('deepseek_request_latency_seconds_count'), $N, "sum(latency _count) == $N");
is($m->value('deepseek_request_latency_seconds_count', \%ls), $m->value('deepseek_requests_total', \%ls),
   'series: latency _count == its requests_total (' . (9 + 6) . ')');
is($m->value('deepseek_request_latency_seconds_count', \%ls), 15, 'series: 15 requests');
is($m->value('deepseek_request_latency_seconds_count', \%ov), scalar(@rest),
   'overflow series: latency _count == its requests_total');

# errors follow their requests: every status >= 400 is an error, plus one in-band
my $errors = grep { $_ >= 400 } @statuses;
is($m->value('deepseek_errors_total'), $errors + 1, "sum(errors_total) == $errors statuses >= 400 + 1 truncation");
is($m->value('deepseek_errors_total', \%ls), 1, 'series: its one error is the truncation');
is($m->value('deepseek_errors_total', { %ls, reason => 'stream_truncated' }), 1, 'series: stream_truncated in a kept slot');
is($m->value('deepseek_errors_total', \%ov), $errors, 'overflow series: the errors of its statuses');

# usage_missing: absent took the first kept slot, the truncation's missing
# reason found none and went to the overflow series' dense counters
is($m->value('deepseek_usage_missing_total'), 2, 'sum(usage_missing_total) == 2');
is($m->value('deepseek_usage_missing_total', { %ls, reason => 'absent' }), 1, 'series: usage_missing{absent}');
is($m->value('deepseek_usage_missing_total', { %ov, reason => 'truncated' }), 1,
   'overflow series: usage_missing{truncated}, no slot left in the series');

is($m->value('deepseek_metrics_dropped_total'), scalar(@rest) + 1,
   'dropped_total: ' . scalar(@rest) . ' requests and 1 reason went to the overflow series');
is($m->value('deepseek_metrics_series', { state => 'used' }), 1, 'one series used');

my ($pc, $pout) = $t->promtool_check($m->raw);
is($pc, 0, 'promtool check metrics') or diag $pout;

$t->stop;
done_testing;
