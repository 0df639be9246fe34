#!/usr/bin/perl
# Self-test of the test harness (t/lib/DSM), the strict exposition parser and the
# DeepSeek mock (t/mock/deepseek-mock.js). Does not need the module: the nginx part
# runs a plain proxy without load_module.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use DSM::Test;
use DSM::Metrics;

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
my $mp = $t->mock_port;
ok($mp > 0, "mock listening on $mp");

sub mreq {
    my (%o) = @_;
    my $body = JSON::PP->new->canonical->encode({ model => $o{model} // 'deepseek-flash',
        stream => $o{stream} ? JSON::PP::true : JSON::PP::false, messages => [] });
    return $t->http(($o{method} // 'POST') => $o{path} // '/chat/completions', port => $mp,
        body => $body, mock => $o{mock}, http10 => $o{http10}, timeout => $o{timeout} // 10);
}

sub events {   # split an SSE body into raw blocks (text between blank lines)
    my ($b, $nl) = @_;
    $nl //= "\n";
    my @e = split /\Q$nl$nl\E/, $b, -1;
    return @e;
}

# ---------------------------------------------------------------- streaming framing
{
    my $r = mreq(stream => 1, mock => 'keepalive_ms=300;keepalive_every_ms=100;prompt=100;hit=60;completion=40;reasoning=7');
    is($r->{status}, 200, 'stream: 200');
    is($r->{headers}{'content-type'}, 'text/event-stream; charset=utf-8', 'stream: content type');
    like($r->{headers}{'x-ds-trace-id'} // '', qr/\S/, 'stream: x-ds-trace-id');
    like($r->{headers}{'transfer-encoding'} // '', qr/chunked/, 'stream: chunked');
    ok($r->{chunked_complete}, 'stream: terminating chunk');
    my $b = $r->{body};
    like($b, qr/\A(?:: keep-alive\n\n){3}data: /, 'stream: 3 keep-alive comments before the first event');
    like($b, qr/\n\ndata: \[DONE\]\n\n\z/, 'stream: ends with data: [DONE] and a blank line');
    my @ev = grep { length } events($b);
    my @data = grep { /^data: \{/ } @ev;
    is(scalar(@data), 1 + 3 + 1, 'stream: role chunk + 3 content chunks + finish chunk');
    my @j = map { decode_json(substr($_, 6)) } @data;
    is_deeply($j[0]{choices}[0]{delta}, { role => 'assistant', content => '' }, 'stream: first chunk carries the role');
    is($j[0]{model}, 'deepseek-flash', 'stream: model echoed');
    ok(!defined $j[$_]{usage}, "stream: usage null on chunk $_") for 0 .. $#j - 1;
    is($j[-1]{choices}[0]{finish_reason}, 'stop', 'stream: finish_reason on the last chunk');
    is_deeply($j[-1]{usage}, { prompt_tokens => 100, completion_tokens => 40, total_tokens => 140,
        prompt_tokens_details => { cached_tokens => 60 }, completion_tokens_details => { reasoning_tokens => 7 },
        prompt_cache_hit_tokens => 60, prompt_cache_miss_tokens => 40 }, 'stream: usage on the last chunk');
    is(join('', map { $_->{choices}[0]{delta}{content} // '' } @j), 'Hello! How can I help you today?', 'stream: content');
}

# reasoner: first chunk has reasoning_content "" and reasoning chunks; defaults
{
    my $r = mreq(stream => 1, model => 'deepseek-reasoner', mock => 'usage_only_chunk=1;crlf=1');
    my @data = grep { /^data: / } grep { length } events($r->{body}, "\r\n");
    is($data[-1], 'data: [DONE]', 'crlf: [DONE] last');
    pop @data;
    my @j = map { decode_json(substr($_, 6)) } @data;
    is_deeply($j[0]{choices}[0]{delta}, { role => 'assistant', content => undef, reasoning_content => '' }, 'reasoner: first chunk');
    is($j[1]{choices}[0]{delta}{reasoning_content}, 'Let me ', 'reasoner: reasoning chunk');
    is_deeply($j[-1]{choices}, [], 'usage_only_chunk: choices []');
    is($j[-1]{usage}{completion_tokens_details}{reasoning_tokens}, 12, 'reasoner default reasoning=12');
    ok(!defined $j[-2]{usage}, 'usage_only_chunk: finish chunk has usage null');
    unlike($r->{body}, qr/(?<!\r)\n/, 'crlf: no bare LF');
}

# ---------------------------------------------------------------- JSON
{
    my $r = mreq(model => 'deepseek-v4-pro', mock => 'keepalive_ms=200;keepalive_every_ms=100');
    is($r->{status}, 200, 'json: 200');
    like($r->{body}, qr/\A\n\n\{/, 'json: blank lines before the body');
    my $j = decode_json($r->{body});
    is($j->{object}, 'chat.completion', 'json: object');
    is($j->{model}, 'deepseek-v4-pro', 'json: model echoed');
    is_deeply($j->{usage}, { prompt_tokens => 20, completion_tokens => 30, total_tokens => 50,
        prompt_tokens_details => { cached_tokens => 8 }, completion_tokens_details => { reasoning_tokens => 0 },
        prompt_cache_hit_tokens => 8, prompt_cache_miss_tokens => 12 }, 'json: default usage');
    $r = mreq(mock => 'model=deepseek-flash;status=200');
    ok(defined $r->{headers}{'content-length'}, 'json: plain answer has Content-Length');
    is(decode_json($r->{body})->{model}, 'deepseek-flash', 'json: model override');
}

# FIM, models, balance, anthropic
{
    my $r = mreq(path => '/beta/completions', mock => 'content=abc;chunks=1');
    my $j = decode_json($r->{body});
    is($j->{choices}[0]{text}, 'abc', 'fim: text in choices');
    $r = $t->http(GET => '/models', port => $mp);
    is(decode_json($r->{body})->{data}[0]{id}, 'deepseek-flash', 'models');
    $r = $t->http(GET => '/user/balance', port => $mp);
    is(decode_json($r->{body})->{balance_infos}[0]{total_balance}, '110.00', 'balance');
    $r = mreq(path => '/anthropic/v1/messages', stream => 1);
    my @names = $r->{body} =~ /^event: (\w+)$/mg;
    is($names[0], 'message_start', 'anthropic: message_start first');
    is($names[-1], 'message_stop', 'anthropic: message_stop last');
    ok((grep { $_ eq 'ping' } @names) && (grep { $_ eq 'content_block_delta' } @names)
       && (grep { $_ eq 'message_delta' } @names), 'anthropic: ping, deltas, message_delta');
    $r = mreq(path => '/anthropic/v1/messages');
    is(decode_json($r->{body})->{usage}{cache_read_input_tokens}, 8, 'anthropic json usage');
}

# errors
for my $st (400, 401, 402, 422, 429, 500, 503) {
    my $r = mreq(stream => 1, mock => "status=$st");
    is($r->{status}, $st, "error $st status");
    my $j = eval { decode_json($r->{body}) } || {};
    ok($j->{error} && defined $j->{error}{message} && exists $j->{error}{param}
       && defined $j->{error}{type} && defined $j->{error}{code}, "error $st body shape");
}

# in-band failures and shaping
{
    my $r = mreq(stream => 1, mock => 'truncate_after=100', http10 => 1);
    is(length $r->{body}, 100, 'truncate_after=100: exactly 100 body bytes (HTTP/1.0)');
    $r = mreq(stream => 1, mock => 'truncate_events=2');
    ok(!$r->{chunked_complete}, 'truncate_events: no terminating chunk');
    is(scalar(() = $r->{body} =~ /^data: /mg), 2, 'truncate_events=2: two events');
    $r = mreq(stream => 1, mock => 'queue_timeout_ms=300;keepalive_every_ms=100');
    is($r->{body}, ": keep-alive\n\n" x 3, 'queue_timeout: only keep-alives, then end');
    $r = mreq(stream => 1, mock => 'finish=content_filter;empty=1');
    my @d = grep { /^data: \{/ } events($r->{body});
    is(scalar @d, 2, 'empty: role + finish chunks only');
    like($d[-1], qr/"finish_reason":"content_filter"/, 'finish=content_filter');
    $r = mreq(stream => 1, mock => 'tool_calls=1');
    like($r->{body}, qr/"tool_calls":\[\{"index":0,"id":"call_00_mock"/, 'tool_calls delta');
    like($r->{body}, qr/"finish_reason":"tool_calls"/, 'tool_calls finish');
    $r = mreq(stream => 1, mock => 'no_done=1');
    unlike($r->{body}, qr/\[DONE\]/, 'no_done');

    my $a = mreq(stream => 1, mock => 'trace_id=x');
    my $s = mreq(stream => 1, mock => 'trace_id=x;split=1,7,8,200,201;split_delay_ms=20');
    my $norm = sub { my $x = shift; $x =~ s/"id":"[^"]*"//g; $x =~ s/"created":\d+//g; $x };
    is($norm->($s->{body}), $norm->($a->{body}), 'split: same body bytes');
    ok($s->{elapsed} >= 0.09, 'split: pieces delayed');

    $r = mreq(stream => 1, mock => 'size=200000');
    ok(length($r->{body}) > 190000 && length($r->{body}) < 230000, 'size=200000: ~200 kB (' . length($r->{body}) . ')');
    like($r->{body}, qr/data: \[DONE\]\n\n\z/, 'size: complete');

    $r = mreq(stream => 1, mock => 'hang=1', timeout => 0.5);
    ok($r->{timeout} && $r->{raw} eq '', 'hang: no answer');
    $r = mreq(mock => 'sleep_ms=300');
    ok($r->{elapsed} >= 0.29 && $r->{status} == 200, 'sleep_ms before headers');
}

# gzip
SKIP: {
    my $r = mreq(mock => 'gzip=1');
    is($r->{headers}{'content-encoding'}, 'gzip', 'gzip: Content-Encoding');
    eval { require IO::Uncompress::Gunzip; 1 } or skip 'no IO::Uncompress::Gunzip', 1;
    my $plain;
    IO::Uncompress::Gunzip::gunzip(\$r->{body} => \$plain);
    like($plain // '', qr/"prompt_cache_hit_tokens":8/, 'gzip: body decompresses');
}

# stats
{
    my $st = $t->mock_stats;
    ok($st->{total} > 20, 'stats total');
    ok($st->{paths}{'/chat/completions'} > 10, 'stats per path');
    is($st->{paths}{'/beta/completions'}, 1, 'stats /beta/completions');
    $t->mock_reset;
    is($t->mock_stats->{total}, 0, 'reset');
}

# ---------------------------------------------------------------- exposition parser
my $GOOD_TEXT = <<'EOF';
# HELP deepseek_requests_total Requests finished.
# TYPE deepseek_requests_total counter
deepseek_requests_total{endpoint="chat_completions",model="deepseek-flash",status="200"} 3
deepseek_requests_total{endpoint="chat_completions",model="deepseek-flash",status="429"} 1
# HELP deepseek_request_latency_seconds Request latency.
# TYPE deepseek_request_latency_seconds histogram
deepseek_request_latency_seconds_bucket{endpoint="chat_completions",model="deepseek-flash",le="0.05"} 1
deepseek_request_latency_seconds_bucket{endpoint="chat_completions",model="deepseek-flash",le="0.1"} 3
deepseek_request_latency_seconds_bucket{endpoint="chat_completions",model="deepseek-flash",le="+Inf"} 4
deepseek_request_latency_seconds_sum{endpoint="chat_completions",model="deepseek-flash"} 0.25
deepseek_request_latency_seconds_count{endpoint="chat_completions",model="deepseek-flash"} 4
# HELP deepseek_requests_in_flight Requests in flight.
# TYPE deepseek_requests_in_flight gauge
deepseek_requests_in_flight{endpoint="chat_completions"} 0
# HELP deepseek_build_info Build information.
# TYPE deepseek_build_info gauge
deepseek_build_info{version="0.1.0",nginx_version="1.22.1",weird="a\\b\"c\nd"} 1
EOF
(my $GOOD_OM = $GOOD_TEXT) =~ s/^# (HELP|TYPE) deepseek_requests_total /# $1 deepseek_requests /mg;
$GOOD_OM .= "# EOF\n";
my $TEXT_CT = 'text/plain; version=0.0.4; charset=utf-8';
my $OM_CT = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

{
    my $m = eval { DSM::Metrics->parse($GOOD_TEXT, $TEXT_CT) };
    ok($m, 'parser accepts good text') or diag $@;
    is($m->value('deepseek_requests_total', { endpoint => 'chat_completions' }), 4, 'value sums matching samples');
    is($m->value('deepseek_requests_total', { status => '200' }), 3, 'value with label match');
    is($m->value('deepseek_requests_total', { status => '503' }), 0, 'value 0 when none');
    is($m->type('deepseek_request_latency_seconds'), 'histogram', 'type');
    is_deeply([ $m->families ], [qw(deepseek_requests_total deepseek_request_latency_seconds deepseek_requests_in_flight deepseek_build_info)], 'families in order');
    is(($m->samples('deepseek_build_info'))[0]{labels}{weird}, "a\\b\"c\nd", 'label unescaping');
    my $o = eval { DSM::Metrics->parse($GOOD_OM, $OM_CT) };
    ok($o, 'parser accepts good OpenMetrics') or diag $@;
    is($o && $o->type('deepseek_requests'), 'counter', 'OM counter family without _total');
    is($o && $o->value('deepseek_requests_total'), 4, 'OM counter samples with _total');
    my ($c, $out) = $t->promtool_check($GOOD_TEXT);
    is($c, 0, 'promtool accepts the good sample') or diag $out;
    ($c, $out) = $t->promtool_check("bad metric line{\n");
    isnt($c, 0, 'promtool rejects garbage');
}

my @BAD_TEXT = (
    [ 'malformed line', "# TYPE a gauge\na{x=\"1\"}\n", qr/malformed/ ],
    [ 'malformed label set', "# TYPE a gauge\na{x=\"1\" y=\"2\"} 1\n", qr/missing ','|malformed/ ],
    [ 'bad value', "# TYPE a gauge\na 1x\n", qr/bad sample value/ ],
    [ 'bad escape', "# TYPE a gauge\na{x=\"\\t\"} 1\n", qr/bad escape/ ],
    [ 'bad HELP escape', "# HELP a x\\ty\n# TYPE a gauge\na 1\n", qr/bad escape/ ],
    [ 'invalid UTF-8', "# TYPE a gauge\na{x=\"\xff\xfe\"} 1\n", qr/UTF-8/ ],
    [ 'bad label name', "# TYPE a gauge\na{1x=\"1\"} 1\n", qr/invalid label name/ ],
    [ 'reserved label name', "# TYPE a gauge\na{__x=\"1\"} 1\n", qr/reserved label/ ],
    [ 'duplicate label name', "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n", qr/duplicate label/ ],
    [ 'duplicate HELP', "# HELP a x\n# HELP a y\n# TYPE a gauge\na 1\n", qr/duplicate HELP/ ],
    [ 'duplicate TYPE', "# TYPE a gauge\n# TYPE a gauge\na 1\n", qr/duplicate TYPE/ ],
    [ 'TYPE after samples', "a 1\n# TYPE a gauge\n", qr/after its samples/ ],
    [ 'non-contiguous family', "# TYPE a gauge\na{x=\"1\"} 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n", qr/not contiguous/ ],
    [ 'duplicate series', "# TYPE a gauge\na{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n", qr/duplicate series/ ],
    [ 'text counter without _total', "# TYPE a counter\na 1\n", qr/must be named \*_total/ ],
    [ 'counter sample name mismatch', "# TYPE a_total counter\na_total_total 1\n", qr/suffix rules|must be named/ ],
    [ 'gauge with suffix sample', "# TYPE g gauge\ng_sum 1\n", qr/suffix rules|must be named/ ],
    [ 'negative counter', "# TYPE a_total counter\na_total -1\n", qr/negative counter/ ],
    [ 'histogram not cumulative', "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 3\n", qr/not cumulative/ ],
    [ 'histogram le order', "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", qr/increasing order/ ],
    [ 'histogram without +Inf', "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", qr/\+Inf/ ],
    [ 'histogram +Inf != count', "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", qr/!= _count/ ],
    [ 'histogram without count', "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n", qr/no h_count/ ],
    [ 'histogram bucket without le', "# TYPE h histogram\nh_bucket 2\nh_sum 1\nh_count 2\n", qr/without 'le'/ ],
    [ 'unknown type', "# TYPE a foo\na 1\n", qr/unknown metric type/ ],
    [ 'no final newline', "# TYPE a gauge\na 1", qr/newline/ ],
);
for my $c (@BAD_TEXT) {
    my ($name, $text, $re) = @$c;
    my $ok = eval { DSM::Metrics->parse($text, $TEXT_CT); 1 };
    ok(!$ok, "text parser rejects: $name");
    like($@ // '', $re, "text parser message: $name");
}

my @BAD_OM = (
    [ 'missing # EOF', "# TYPE a gauge\na 1\n", qr/EOF/ ],
    [ 'content after # EOF', "# TYPE a gauge\na 1\n# EOF\nb 1\n", qr/after '# EOF'|EOF/ ],
    [ 'blank line', "# TYPE a gauge\n\na 1\n# EOF\n", qr/blank line/ ],
    [ 'counter family with _total', "# TYPE a_total counter\na_total 1\n# EOF\n", qr/must not end in _total/ ],
    [ 'counter sample without _total', "# TYPE a counter\na 1\n# EOF\n", qr/must be 'a_total'|suffix rules/ ],
    [ 'plain comment', "# hello\n# TYPE a gauge\na 1\n# EOF\n", qr/allows only/ ],
    [ 'double space', "# TYPE a gauge\na  1\n# EOF\n", qr/malformed/ ],
    [ 'trailing comma', "# TYPE a gauge\na{x=\"1\",} 1\n# EOF\n", qr/trailing comma/ ],
    [ 'histogram +Inf != count', "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 3\nh_sum 1\n# EOF\n", qr/!= _count/ ],
    [ 'duplicate series', "# TYPE a gauge\na 1\na 2\n# EOF\n", qr/duplicate series/ ],
);
for my $c (@BAD_OM) {
    my ($name, $text, $re) = @$c;
    my $ok = eval { DSM::Metrics->parse($text, $OM_CT); 1 };
    ok(!$ok, "OM parser rejects: $name");
    like($@ // '', $re, "OM parser message: $name");
}

# ---------------------------------------------------------------- nginx process control (no module)
{
    $t->write_conf(<<'EOF');
%%COMMON%%
http {
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_buffering off;
        }
        # stock nginx code with known sanitizer findings (suppressed: t/lib/sanitizer/)
        location ~ ^/regex/(\d+)$ { return 200; }
        location = /empty { return 204; }
        location /ka/ {
            proxy_pass http://mock/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    upstream mock { server 127.0.0.1:%%MOCK_PORT%%; keepalive 4; }
}
EOF
    my ($code, $out) = $t->nginx_t;
    is($code, 0, 'nginx -t on the plain conf') or diag $out;
    $t->start;
    my @w = $t->worker_pids;
    is(scalar @w, 2, 'two workers');
    my $r = $t->chat(stream => 1, mock => 'delay_ms=10');
    is($r->{status}, 200, 'proxied stream');
    like($r->{body}, qr/data: \[DONE\]\n\n\z/, 'proxied stream complete');
    ok($t->reload, 'reload replaced the workers');
    my @w2 = $t->worker_pids;
    is(scalar @w2, 2, 'two workers after reload');
    ok(!grep({ my $x = $_; grep { $_ == $x } @w } @w2), 'new worker PIDs');
    is($t->http(GET => '/regex/1')->{status}, 200, 'regex location, return 200 with no text');
    is($t->http(GET => '/empty')->{status}, 204, 'return 204');

    # upstream keepalive: the mock keeps connections open (one per worker at most)
    $t->mock_reset;
    my $c0 = $t->mock_stats->{connections};
    for (1 .. 6) {
        $r = $t->chat(path => '/ka/chat/completions', stream => $_ % 2, mock => 'chunks=2');
        is($r->{status}, 200, "keepalive upstream request $_");
    }
    my $st = $t->mock_stats;
    is($st->{paths}{'/chat/completions'}, 6, 'keepalive: 6 requests at the mock');
    ok($st->{connections} - $c0 <= 3, 'keepalive: connections reused (' . ($st->{connections} - $c0) . ' new incl. the stats ones)');

    $r = $t->chat(mock => 'status=503');
    is($r->{status}, 503, 'proxied error status');
    $r = $t->chat(stream => 1, mock => 'delay_ms=200', close_after => 0.3);
    ok($r->{closed_early}, 'client close_after');
    is_deeply([ $t->errors ], [], 'no errors in logs');

    # error detection: a worker killed on purpose is reported, then allowed
    my ($victim) = $t->worker_pids;
    kill 'KILL', $victim;
    my $replaced = 0;
    for (1 .. 100) {   # bounded: 5 s
        my @now = $t->worker_pids;
        if (@now == 2 && !grep { $_ == $victim } @now) { $replaced = 1; last }
        select(undef, undef, undef, 0.05);
    }
    ok($replaced, 'killed worker replaced');
    ok((grep { /exited on signal 9/ } $t->errors), 'errors() reports "exited on signal"');
    $t->allow(qr/exited on signal 9/);
    is_deeply([ $t->errors ], [], 'allowed pattern filtered');
    $t->stop;
    ok(!$t->master_pid, 'stopped');
    like($t->read_log('error.log'), qr/\[notice\].*exit/, 'error.log written in the prefix');
    ok(-e $t->prefix . '/logs/access.log', 'access.log in the prefix');
}

done_testing;
