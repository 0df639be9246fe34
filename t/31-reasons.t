#!/usr/bin/perl
# Issue 8: every HTTP status lands under its documented deepseek_errors_total
# reason (docs/metrics.md), the status label is printed digit for digit,
# deepseek_metrics_request_body off is obeyed, and the usage fields that have
# alternatives (cached_tokens, a missing prompt_cache_miss_tokens, Anthropic's
# cache_creation_input_tokens) are read exactly. Each case is its own series
# (user label "case"), so a wrong mapping shows as a wrong reason, not a sum.

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
    deepseek_metrics_zone z:4m;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z;
        deepseek_metrics_label case $http_x_case;
        proxy_set_header Accept-Encoding "";
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
        }
        location /nobody/ {
            deepseek_metrics_request_body off;
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

# status from the mock => reason (docs/metrics.md "deepseek_errors_total reasons")
my @STATUS = (
    [ 400, 'invalid_request' ],
    [ 413, 'invalid_request' ],
    [ 414, 'invalid_request' ],
    [ 422, 'invalid_request' ],
    [ 431, 'invalid_request' ],
    [ 401, 'auth' ],
    [ 403, 'auth' ],
    [ 402, 'insufficient_balance' ],
    [ 404, 'not_found' ],
    [ 429, 'rate_limited' ],
    [ 499, 'client_closed' ],
    [ 405, 'client_error' ],
    [ 418, 'client_error' ],
    [ 498, 'client_error' ],
    [ 500, 'server_error' ],
    [ 501, 'server_error' ],
    [ 599, 'server_error' ],
    [ 502, 'upstream_unavailable' ],
    [ 503, 'overloaded' ],
    [ 504, 'upstream_timeout' ],
    [ 200, undef ],
    [ 201, undef ],
    [ 302, undef ],
);

for my $c (@STATUS) {
    my ($st) = @$c;
    my $r = $t->chat(mock => "status=$st", headers => { 'X-Case' => "s$st" });
    is($r->{status}, $st, "mock status $st passed through");
}

# model from the request body (an error names none): read unless switched off
my @BODY = (
    # case       path                        model label
    [ 'body-on',  '/chat/completions',        'deepseek-v4-pro' ],
    [ 'body-off', '/nobody/chat/completions', 'unknown' ],
);
for my $c (@BODY) {
    my ($case, $path) = @$c;
    is($t->chat(path => $path, model => 'deepseek-v4-pro', mock => 'status=429',
                headers => { 'X-Case' => $case })->{status}, 429, "$case: 429");
}

# usage fields with alternatives: [case, path, stream, X-Mock, hit, miss, output, reasoning]
# (the Anthropic format has no reasoning count)
my @USAGE = (
    [ 'hit-field',      '/chat/completions',      0, 'prompt=100;hit=40;cached_null=1;reasoning=7', 40, 60, 30, 7 ],
    [ 'miss-derived',   '/chat/completions',      1, 'prompt=100;hit=25;no_miss=1;reasoning=7',     25, 75, 30, 7 ],
    [ 'anthropic-cc',   '/anthropic/v1/messages', 0, 'prompt=100;hit=10;cache_creation=30',         10, 90, 30, 0 ],
    [ 'anthropic-cc-s', '/anthropic/v1/messages', 1, 'prompt=100;hit=10;cache_creation=30',         10, 90, 30, 0 ],
);
for my $c (@USAGE) {
    my ($case, $path, $stream, $mock) = @$c;
    is($t->chat(path => $path, stream => $stream, mock => $mock, headers => { 'X-Case' => $case })->{status},
       200, "$case: 200");
}

my $m = $t->scrape_settled(accept => 'openmetrics');

for my $c (@STATUS) {
    my ($st, $reason) = @$c;
    my $sel = { case => "s$st" };
    is($m->value('deepseek_requests_total', { %$sel, status => $st }), 1, "$st: requests_total{status=\"$st\"} 1");
    is(scalar($m->samples('deepseek_requests_total', $sel)), 1, "$st: one status series");
    my @e = map { "$_->{labels}{reason}=$_->{value}" } $m->samples('deepseek_errors_total', $sel);
    is("@e", defined $reason ? "$reason=1" : '', "$st: errors_total " . ($reason // 'none'));
}

for my $c (@BODY) {
    my ($case, undef, $model) = @$c;
    is($m->value('deepseek_requests_total', { case => $case, model => $model, status => 429 }), 1,
       "$case: model label $model");
}

my %TYPE = (input_cache_hit => 4, input_cache_miss => 5, output => 6);
for my $c (@USAGE) {
    my $case = $c->[0];
    for my $ty (sort keys %TYPE) {
        is($m->value('deepseek_tokens_total', { case => $case, type => $ty }), $c->[ $TYPE{$ty} ],
           "$case: tokens_total{type=\"$ty\"} $c->[ $TYPE{$ty} ]");
    }
    is($m->value('deepseek_reasoning_tokens_total', { case => $case }), $c->[7], "$case: reasoning_tokens_total $c->[7]");
}
is($m->value('deepseek_usage_missing_total'), 0, 'usage read for every 200');

$t->stop;
done_testing;
