#!/usr/bin/perl
# HTTP/2 clients (curl with prior knowledge), request bodies over 64k, streamed
# answers, the export over HTTP/2: counted exactly. Under the ASan+UBSan build
# this drives stock nginx's HTTP/2 code, whose own UBSan findings are
# suppressed by name in t/lib/sanitizer/ubsan.supp (never the module's).

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
    server {
        listen 127.0.0.1:%%PORT%% http2;
        location / {
            deepseek_metrics z;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;
my $port = $t->port('PORT');

my $big = $t->write_file('body-big.json', '{"model":"deepseek-flash","messages":[{"role":"user","content":"'
                                          . ('x' x 70000) . '"}]}');
my $stream = $t->write_file('body-stream.json', '{"model":"deepseek-flash","stream":true,'
                                                . '"messages":[{"role":"user","content":"hi"}]}');

sub curl {
    my (@args) = @_;
    open my $fh, '-|', 'curl', '-s', '--http2-prior-knowledge', '-o', '/dev/null',
        '-w', '%{http_version} %{http_code}', @args or die "curl: $!";
    my $out = <$fh>;
    close $fh;
    return $out // '';
}

for my $i (1 .. 3) {
    is(curl('-X', 'POST', '--data-binary', "\@$big", '-H', 'Content-Type: application/json',
            "http://127.0.0.1:$port/v1/chat/completions"), '2 200', "HTTP/2 POST, 70k body #$i");
}
for my $i (1 .. 2) {
    is(curl('-X', 'POST', '--data-binary', "\@$stream", '-H', 'Content-Type: application/json',
            "http://127.0.0.1:$port/chat/completions"), '2 200', "HTTP/2 POST, streamed answer #$i");
}
is(curl("http://127.0.0.1:$port/v1/models"), '2 200', 'HTTP/2 GET /v1/models');

# the export over HTTP/2 (the port speaks only HTTP/2), once in-flight is 0
sub scrape_h2 {
    open my $fh, '-|', 'curl', '-s', '--http2-prior-knowledge', "http://127.0.0.1:$port/metrics" or die;
    my $text = do { local $/; <$fh> };
    close $fh;
    return DSM::Metrics->parse($text, 'text/plain; version=0.0.4');
}
my $m;
for (1 .. 100) {    # bounded: 5 s
    $m = scrape_h2();
    last if $m->value('deepseek_requests_in_flight') == 0;
    select(undef, undef, undef, 0.05);
}
my %got = map { ("$_->{labels}{endpoint}|$_->{labels}{status}" => $_->{value}) }
          $m->samples('deepseek_requests_total');
is_deeply(\%got, { 'chat_completions|200' => 5, 'models|200' => 1 }, 'counted exactly');
is($m->value('deepseek_tokens_total', { endpoint => 'chat_completions', type => 'output' }), 5 * 30,
   'output tokens of all 5 answers');
is($m->value('deepseek_time_to_first_token_seconds_count'), 2, 'TTFT of the 2 streams');
is($m->count('deepseek_usage_missing_total'), 0, 'no usage missing');
is($m->value('deepseek_requests_in_flight'), 0, 'in-flight 0');

$t->stop;
done_testing;
