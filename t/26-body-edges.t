#!/usr/bin/perl
# Issue 8 (items 1, 2, 9, 10): response bodies at the edges, each one request with the
# exact deltas of deepseek_errors_total / deepseek_usage_missing_total (by reason),
# deepseek_requests_total (by status) and deepseek_tokens_total / deepseek_cost_total;
# nothing else may move.
#
#   1  an error object inside a 200 (JSON body, SSE data event, Anthropic event: error)
#      counts one error, reason from its type/code; usage read before it still counts
#   2  a usage value that is not an integer in [0, 2^53) invalidates the response's usage
#      (usage_missing{invalid_usage}, nothing added); cost saturates per request; counters
#      stop short of 2^64 instead of wrapping
#   9  hostile bodies classified by what was seen; one bad SSE event is skipped, the
#      usage of a later event still counts
#  10  deepseek_metrics_endpoint with a built-in name reads the body like that endpoint
#
# The mock's raw= key sends exact bytes as the whole upstream response.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MIME::Base64 qw(encode_base64);
use JSON::PP ();
use DSM::Test;

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
$t->write_conf(<<'EOF2');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:4m;
    deepseek_metrics_price deepseek-flash USD hit=1 miss=2 output=3;
    upstream mock { server 127.0.0.1:%%MOCK_PORT%%; keepalive 4; }
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics deepseek;
        proxy_set_header Accept-Encoding "";
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /h11/ { proxy_pass http://mock/; }
        location /sat/ { deepseek_metrics_label loc sat; proxy_pass http://mock/; }
        location /big/ { deepseek_metrics_label loc big; proxy_pass http://mock/; }
        location = /llm {
            deepseek_metrics_endpoint chat_completions;
            proxy_pass http://mock/v1/chat/completions;
        }
        location = /mine {
            deepseek_metrics_endpoint my_llm;
            proxy_pass http://mock/v1/chat/completions;
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF2
$t->start;

sub snapshot {
    my $m = $t->scrape_settled;
    my %s;
    for my $x ($m->samples('deepseek_errors_total')) { $s{"error:$x->{labels}{reason}"} += $x->{value} }
    for my $x ($m->samples('deepseek_usage_missing_total')) { $s{"missing:$x->{labels}{reason}"} += $x->{value} }
    for my $x ($m->samples('deepseek_requests_total')) {
        $s{"status:$x->{labels}{endpoint}:$x->{labels}{status}"} += $x->{value};
        $s{requests} += $x->{value};
    }
    for my $x ($m->samples('deepseek_tokens_total')) { $s{"tokens:$x->{labels}{type}"} += $x->{value} }
    # the huge costs of /sat/ and /big/ are checked as exposition text, apart
    for my $x (grep { !$_->{labels}{loc} } $m->samples('deepseek_cost_total')) { $s{"cost:$x->{labels}{currency}"} += $x->{value} }
    for my $x ($m->samples('deepseek_time_to_first_token_seconds_count')) { $s{ttft} += $x->{value} }
    return \%s;
}

my $before = snapshot();

sub delta {
    my $after = snapshot();
    my %d;
    for my $k (keys %$after) {
        next if $k eq 'requests';
        my $dv = $after->{$k} - ($before->{$k} // 0);
        $d{$k} = ($dv == int($dv) ? $dv : sprintf('%.12g', $dv)) if $dv;
    }
    $before = $after;
    return join ' ', map { "$_=$d{$_}" } sort keys %d;
}

sub raw_response {
    my ($ctype, $body, %o) = @_;
    return "HTTP/1.1 200 OK\r\nContent-Type: $ctype\r\n"
        . ($o{headers} // "Content-Length: " . length($body) . "\r\n")
        . "Connection: close\r\n\r\n$body";
}

sub req_body {
    my ($stream) = @_;
    return JSON::PP->new->canonical->encode({ model => 'deepseek-flash',
        stream => $stream ? JSON::PP::true : JSON::PP::false,
        messages => [ { role => 'user', content => 'hi' } ] });
}

# case(name, path, stream, mock or raw, want)
sub case {
    my ($name, $path, $stream, $x, $want) = @_;
    my $mock = ref $x ? 'raw=' . encode_base64(raw_response(@$x), '') : $x;
    $t->http(POST => $path, body => req_body($stream), mock => $mock, timeout => 10);
    is(delta(), join(' ', sort split ' ', $want), $name);
}

my $SSE = 'text/event-stream; charset=utf-8';
my $JS = 'application/json';
my $U = '{"prompt_tokens":6,"completion_tokens":9,"total_tokens":15,'
      . '"prompt_cache_hit_tokens":2,"prompt_cache_miss_tokens":4}';
sub ev {
    my ($content, $finish, $usage) = @_;
    return 'data: {"id":"x1","object":"chat.completion.chunk","created":1785087280,'
        . '"model":"deepseek-flash","choices":[{"index":0,"delta":{"content":"' . $content
        . '"},"finish_reason":' . ($finish // 'null') . '}],"usage":' . ($usage // 'null') . "}\n\n";
}
sub jbody {
    my ($usage) = @_;
    return '{"id":"j1","object":"chat.completion","created":1785087280,"model":"deepseek-flash",'
        . '"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
        . '"finish_reason":"stop"}],"usage":' . $usage . '}';
}
sub err { my ($type, $code) = @_; return qq({"error":{"message":"m","type":"$type","param":null,"code":$code}}) }

my $C = 'status:chat_completions:200=1';
my $TOK = 'tokens:input_cache_hit=2 tokens:input_cache_miss=4 tokens:output=9 cost:USD=3.7e-05';
my $CHAT = '/h11/v1/chat/completions';
my $MSG = '/h11/anthropic/v1/messages';

# --- 1: errors inside a 200
case('JSON error body rate_limit_error', $CHAT, 0, [ $JS, err('rate_limit_error', '"rate_limit_exceeded"') ],
     "$C error:rate_limited=1");
case('JSON error body: known code after an unknown type', $CHAT, 0,
     [ $JS, err('service_unavailable_error', '"server_overloaded"') ], "$C error:overloaded=1");
case('JSON error body: known type, then an unknown code', $CHAT, 0,
     [ $JS, err('rate_limit_error', '"some_code"') ], "$C error:rate_limited=1");
case('JSON error body api_error', $CHAT, 0, [ $JS, err('api_error', 'null') ], "$C error:server_error=1");
case('JSON error body internal_error code', $CHAT, 0, [ $JS, err('x', '"internal_error"') ],
     "$C error:server_error=1");
case('JSON error body, unknown type', $CHAT, 0, [ $JS, err('weird_error', 'null') ], "$C error:stream_error=1");
case('JSON error string', $CHAT, 0, [ $JS, '{"error":"boom"}' ], "$C error:stream_error=1");
case('SSE error event after usage, then the end (no [DONE])', $CHAT, 1,
     [ $SSE, ev('Hel') . ev('lo', '"stop"', $U) . 'data: ' . err('api_error', '"internal_error"') . "\n\n" ],
     "$C error:server_error=1 $TOK ttft=1");
case('SSE error event then [DONE]', $CHAT, 1,
     [ $SSE, ev('Hel') . 'data: ' . err('overloaded', 'null') . "\n\ndata: [DONE]\n\n" ],
     "$C error:stream_error=1 ttft=1");
case('Anthropic event: error after message_start usage', $MSG, 1,
     [ $SSE, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"deepseek-flash\","
           . "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\","
           . "\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n" ],
     'status:messages:200=1 error:overloaded=1 tokens:input_cache_miss=5 tokens:output=1 cost:USD=1.3e-05');
case('Anthropic JSON error body', $MSG, 0,
     [ $JS, '{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}' ],
     'status:messages:200=1 error:rate_limited=1');

# --- 2: usage values
for my $bad ('18446744073709551615', '9007199254740992', '-1', '1.5', '1e3', '"6"', 'true') {
    case("usage value $bad: usage invalid, nothing added", $CHAT, 0,
         [ $JS, jbody(qq({"prompt_tokens":6,"completion_tokens":$bad,"total_tokens":15})) ],
         "$C missing:invalid_usage=1");
}
case('SSE: an invalid usage then a valid one: still invalid', $CHAT, 1,
     [ $SSE, ev('a', 'null', '{"prompt_tokens":-6,"completion_tokens":1}') . ev('b', '"stop"', $U) . "data: [DONE]\n\n" ],
     "$C missing:invalid_usage=1 ttft=1");
case('usage 2^53-1 counts; the cost saturates at 2^53 units', '/sat/v1/chat/completions', 0,
     [ $JS, jbody('{"prompt_tokens":9007199254740991,"completion_tokens":9007199254740991,'
                  . '"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":9007199254740991}') ],
     "$C tokens:input_cache_miss=9007199254740991 tokens:output=9007199254740991");
like($t->scrape->raw, qr/^deepseek_cost_total\{[^}]*loc="sat"[^}]*\} 9007\.199254740992$/m,
     'the saturated cost is exactly 2^53 units');

# --- 9: hostile bodies
case('invalid chunked framing, no body: truncated, not queue_timeout', $CHAT, 1,
     [ $SSE, "zz\r\n", headers => "Transfer-Encoding: chunked\r\n" ],
     "$C error:stream_truncated=1 missing:truncated=1");
case('empty 200 body: empty_response', $CHAT, 0, [ $JS, '' ], "$C error:empty_response=1 missing:absent=1");
case('top-level JSON array: invalid_json, not empty_response', $CHAT, 0,
     [ $JS, '[' . jbody($U) . ']' ], "$C missing:invalid_json=1");
case('JSON sent as text/event-stream: read as JSON', $CHAT, 1, [ $SSE, jbody($U) ], "$C $TOK");
case('JSON error sent as text/event-stream', $CHAT, 1,
     [ $SSE, err('service_unavailable_error', '"server_overloaded"') ], "$C error:overloaded=1");
case('SSE: a NUL byte in one event, usage in a later one', $CHAT, 1,
     [ $SSE, ev('Hel') . "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}\0]}\n\n" . ev('lo', '"stop"', $U)
           . "data: [DONE]\n\n" ], "$C $TOK ttft=1");
case('SSE: one CR-only event, usage in a later one', $CHAT, 1,
     [ $SSE, (ev('Hel') =~ s/\n\n$/\r\r/r) . ev('lo', '"stop"', $U) . "data: [DONE]\n\n" ], "$C $TOK ttft=1");
case('SSE: one event nested too deep, usage in a later one', $CHAT, 1,
     [ $SSE, ev('Hel') . 'data: {"x":' . ('[' x 100) . "\n\n" . ev('lo', '"stop"', $U) . "data: [DONE]\n\n" ],
     "$C $TOK ttft=1");
case('SSE: only invalid events, then [DONE]: invalid_json', $CHAT, 1,
     [ $SSE, "data: {\"x\":\0}\n\ndata: nope\n\ndata: [DONE]\n\n" ], "$C missing:invalid_json=1");

# --- 10: an endpoint override with a built-in name reads the body
case('override chat_completions: tokens, TTFT, cost', '/llm', 1, 'delay_ms=5',
     "$C tokens:input_cache_hit=8 tokens:input_cache_miss=12 tokens:output=30 cost:USD=0.000122 ttft=1");
case('override chat_completions: usage_missing', '/llm', 0, 'no_usage=1', "$C missing:absent=1");
case('override with a custom name: counted, body not read', '/mine', 1, 'delay_ms=5', 'status:my_llm:200=1');

# --- 2: counters stop short of 2^64, never wrap (1537 adds of 2^53-1 reach the stop)
{
    my $big = 9007199254740991;
    my $mock = 'raw=' . encode_base64(raw_response($JS, jbody(
        qq({"prompt_tokens":$big,"completion_tokens":$big,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":$big}))), '');
    my ($prev, $ok) = (0, 1);
    for my $i (1 .. 1600) {
        $t->http(POST => '/big/v1/chat/completions', body => req_body(0), mock => $mock, timeout => 10);
        next if $i % 400;
        my $v = $t->scrape_settled->value('deepseek_tokens_total', { type => 'output', loc => 'big' });
        $ok = 0 if $v < $prev;
        $prev = $v;
    }
    ok($ok, 'output tokens never decreased over 1600 huge usages');
    my $m = $t->scrape_settled;
    is($m->value('deepseek_tokens_total', { type => 'output', loc => 'big' }), '13844065254536903167',
       'output tokens stopped at 1537 x (2^53-1), no wrap');
    is($m->value('deepseek_tokens_total', { type => 'input_cache_miss', loc => 'big' }), '13844065254536903167',
       'miss tokens stopped, no wrap');
    like($m->raw, qr/^deepseek_cost_total\{[^}]*loc="big"[^}]*\} 13835058\.055282163712$/m,
         'cost stopped at 1536 x 2^53 units, no wrap');
}

$t->stop;
done_testing;
