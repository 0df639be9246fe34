#!/usr/bin/perl
# Smoke test: the module loads (dynamic .so or static build), counts requests
# proxied to the mock, and its scrape parses strictly and passes promtool.

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
    deepseek_metrics_zone deepseek:10m;

    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics deepseek;
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

my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t accepts the configuration') or diag $out;
$t->start;

for my $i (1 .. 3) {
    my $r = $t->chat(model => 'deepseek-flash');
    is($r->{status}, 200, "request $i: 200");
}

my $m = $t->scrape_settled(accept => 'text');
like($m->response->{headers}{'content-type'} // '', qr{^text/plain; version=0\.0\.4}, 'text content type');
is($m->value('deepseek_requests_total', { endpoint => 'chat_completions', status => '200' }), 3,
   'deepseek_requests_total{endpoint="chat_completions",status="200"} == 3');
is($m->value('deepseek_requests_total', { endpoint => 'chat_completions', model => 'deepseek-flash', status => '200' }), 3,
   'model label from the response');
my ($pc, $pout) = $t->promtool_check($m->raw);
is($pc, 0, 'promtool check metrics: clean') or diag $pout;

my $om = $t->scrape(accept => 'openmetrics');
like($om->response->{headers}{'content-type'} // '', qr{^application/openmetrics-text; version=1\.0\.0}, 'OpenMetrics content type');
is($om->value('deepseek_requests_total', { endpoint => 'chat_completions', status => '200' }), 3, 'OpenMetrics: same count');

$t->stop;
done_testing;
