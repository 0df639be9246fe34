#!/usr/bin/perl
# A request that a counted location sends to the export location (error_page)
# is a scrape, never a DeepSeek request: it is not counted (not as a 200 whose
# body is invalid JSON, not as the 502/429 that led there) and its in-flight
# count is given back at once. The client gets the metrics, with the status
# error_page decides.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;
use DSM::Metrics;

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:1m;
    deepseek_metrics z;                 # inherited, also by the export locations
    proxy_set_header Accept-Encoding "";

    server {
        listen 127.0.0.1:%%PORT%%;

        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
        }

        location = /metrics { deepseek_metrics_export; }
        location @metrics { deepseek_metrics_export; }

        # the zone's endpoint table filled by these (counted at the log phase)
        location /fill/ {
            deepseek_metrics_endpoint fill$arg_e;
            return 204;
        }

        # then a request here keeps its endpoint in a context of its own
        location /full/ {
            deepseek_metrics_endpoint full$arg_e;
            proxy_pass http://127.0.0.1:1;
            error_page 502 = /metrics;
        }

        # nginx-made 502, status kept
        location /kept/ {
            proxy_pass http://127.0.0.1:1;
            error_page 502 /metrics;
        }

        # nginx-made 502, answered as the 200 of the export location
        location /eq/ {
            proxy_pass http://127.0.0.1:1;
            error_page 502 = /metrics;
        }

        # into a named export location: the method stays POST, so a 405
        location /named/ {
            proxy_pass http://127.0.0.1:1;
            error_page 502 = @metrics;
        }

        # a DeepSeek 429, intercepted
        location /limited/ {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_intercept_errors on;
            error_page 429 = /metrics;
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

# every requests_total sample as "endpoint|model|status" => value
sub counts {
    my ($m) = @_;
    my %v;
    $v{"$_->{labels}{endpoint}|$_->{labels}{model}|$_->{labels}{status}"} = $_->{value}
        for $m->samples('deepseek_requests_total');
    return \%v;
}

# one counted request first, so "nothing more" is not "nothing at all"
my $r = $t->chat(model => 'deepseek-flash');
is($r->{status}, 200, 'baseline chat completion');
my $m = $t->scrape_settled(accept => 'text');
my $want = { 'chat_completions|deepseek-flash|200' => 1 };
is_deeply(counts($m), $want, 'baseline: one chat completion counted');

my @cases = (
    [ 'error_page 502 /metrics (status kept)', '/kept/chat/completions',    502 ],
    [ 'error_page 502 = /metrics',             '/eq/chat/completions',      200 ],
    [ 'error_page 502 = @metrics (POST: 405)', '/named/chat/completions',   405 ],
    [ 'DeepSeek 429, error_page 429 = /metrics', '/limited/chat/completions', 200,
      'status=429' ],
);

for my $c (@cases) {
    my ($name, $path, $status, $mock) = @$c;
    for my $i (1 .. 3) {
        my $x = $t->chat(path => $path, model => 'deepseek-flash', ($mock ? (mock => $mock) : ()));
        is($x->{status}, $status, "$name #$i: client got $status");
        next if $status == 405;
        # what the client got is a scrape of the zone
        my $got = eval { DSM::Metrics->parse($x->{body}, 'text/plain; version=0.0.4') };
        ok($got, "$name #$i: the body is the metrics") or diag $@;
        is($got && $got->value('deepseek_requests_total'), 1,
           "$name #$i: the scrape it served shows only the baseline request") if $got;
    }
    my $s = $t->scrape_settled(accept => 'text');
    is_deeply(counts($s), $want, "$name: requests_total unchanged")
        or diag explain counts($s);
    is($s->value('deepseek_request_latency_seconds_count'), 1, "$name: latency _count unchanged");
    is($s->count('deepseek_errors_total'), 0, "$name: no error counted");
    is($s->count('deepseek_usage_missing_total'), 0, "$name: no usage_missing counted");
    is($s->value('deepseek_requests_in_flight'), 0, "$name: in-flight back to 0");
    is($s->value('deepseek_requests_in_flight', { endpoint => 'chat_completions' }), 0,
       "$name: chat_completions in-flight 0");
}

# the traffic did happen: a later real request still counts, exactly once
$r = $t->chat(model => 'deepseek-flash');
is($r->{status}, 200, 'a chat completion after the redirects');
$m = $t->scrape_settled(accept => 'text');
is_deeply(counts($m), { 'chat_completions|deepseek-flash|200' => 2 }, 'counted: 2 in all');
is($m->value('deepseek_requests_in_flight'), 0, 'in-flight 0 at the end');

# With the zone's endpoint table full, a request keeps its endpoint in a
# context from the preaccess phase on; sent to the export location, it is not
# counted, and its context is still given back (in the ASan build, a context
# kept for ever is a LeakSanitizer report at the workers' exit).
my $filled = 0;
for my $e (1 .. 40) {
    $filled++ if $t->http(GET => "/fill/?e=$e")->{status} == 204;
}
is($filled, 40, 'endpoint table filled: 40 endpoint values');
$m = $t->scrape_settled(accept => 'text');
my $before = $m->value('deepseek_requests_total');
for my $i (1 .. 3) {
    my $x = $t->http(GET => "/full/?e=$i");
    is($x->{status}, 200, "endpoint table full, error_page 502 = /metrics #$i: the metrics");
}
$m = $t->scrape_settled(accept => 'text');
is($m->value('deepseek_requests_total'), $before, 'endpoint table full: nothing more counted');
is($m->value('deepseek_requests_in_flight'), 0, 'endpoint table full: in-flight 0');

$t->stop;
done_testing;
