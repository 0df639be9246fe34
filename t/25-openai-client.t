#!/usr/bin/perl
# Issue 3: a real client. The official `openai` npm SDK (^6, t/client/node_modules,
# installed by scripts/deps.sh) calls nginx -> mock with baseURL http://127.0.0.1:PORT
# and .../v1 (and .../beta for FIM): chat.completions non-streaming, streaming without
# stream_options and streaming with stream_options {include_usage: true}, for a plain
# and a reasoner model (t/client/openai-usage.js). The test sums the usage the SDK
# reports and checks deepseek_tokens_total{type} and deepseek_reasoning_tokens_total
# equal it exactly per (endpoint, model), and deepseek_requests_total equals the calls
# made (the script sets maxRetries: 0).
#
# Skipped only when the SDK is not installed and CI is not set; under CI a missing SDK
# is a failure.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP ();
use DSM::Test;

my $REPO = DSM::Test->repo;
my $SDK = "$REPO/t/client/node_modules/openai/package.json";
unless (-f $SDK) {
    if ($ENV{CI}) {
        fail("the openai SDK is not installed ($SDK): run scripts/deps.sh (required under CI)");
        done_testing;
        exit 1;
    }
    plan skip_all => "the openai npm SDK is not installed in t/client/node_modules: run scripts/deps.sh";
}

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:4m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics deepseek;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
            proxy_set_header Authorization "";
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

my $out = $t->prefix . '/sdk-usage.json';
my $r = DSM::Test::_run_capture([ $ENV{DSM_NODE} || 'node', "$REPO/t/client/openai-usage.js",
                                  '--port', $t->port('PORT'), '--out', $out, '--rounds', 2 ], undef, 90);
is($r->{code}, 0, 'the SDK script ran without error') or diag $r->{out};
my $data = -f $out ? do { local $/; open my $f, '<', $out or die; JSON::PP->new->decode(<$f>) } : { calls => [] };
my @calls = @{ $data->{calls} };
note("openai SDK $data->{sdk_version}: " . scalar(@calls) . ' calls') if $data->{sdk_version};
like($data->{sdk_version} // '', qr/^6\./, 'openai SDK major version 6');
is(scalar @calls, 2 * (2 * 2 * 3 + 2), '28 calls made (2 rounds x (2 baseURLs x 2 models x 3 modes + 2 FIM))');

my (%sum, %n);
my %EP = (chat => 'chat_completions', fim => 'completions');
for my $c (@calls) {
    my $u = $c->{usage};
    my $id = "call $c->{n} ($c->{api} $c->{model} $c->{mode} $c->{baseURL})";
    ok($u, "$id: the SDK reports usage" . ($c->{mode} eq 'stream' ? ' (stream without stream_options)' : '')) or next;
    like($c->{text}, qr/Hello/, "$id: content received");
    # cross-check: the SDK saw what the mock was told to send
    my $w = $c->{want};
    is_deeply([ @$u{qw(prompt_tokens completion_tokens prompt_cache_hit_tokens)},
                ($u->{completion_tokens_details} // {})->{reasoning_tokens} // 0 ],
              [ @$w{qw(prompt completion hit reasoning)} ], "$id: SDK usage == requested usage");
    my $hit  = $u->{prompt_cache_hit_tokens} // 0;
    my $miss = $u->{prompt_cache_miss_tokens} // ($u->{prompt_tokens} - $hit);
    my $k = $sum{ $EP{ $c->{api} } }{ $c->{served} // $c->{model} } //= {};
    $k->{hit} += $hit;
    $k->{miss} += $miss;
    $k->{output} += $u->{completion_tokens};
    $k->{reasoning} += ($u->{completion_tokens_details} // {})->{reasoning_tokens} // 0;
    $k->{total} += $u->{total_tokens};
    $n{ $EP{ $c->{api} } }{ $c->{served} // $c->{model} }++;
}
ok(scalar(grep { $_->{mode} eq 'stream' && $_->{usage} } @calls) >= 8, 'streams without stream_options still carried usage');

my $m = $t->scrape_settled;
for my $ep (sort keys %sum) {
    for my $model (sort keys %{ $sum{$ep} }) {
        my $k = $sum{$ep}{$model};
        is($m->value('deepseek_tokens_total', { endpoint => $ep, model => $model, type => 'input_cache_hit' }), $k->{hit},
           "tokens_total{$ep,$model,input_cache_hit} == SDK sum $k->{hit}");
        is($m->value('deepseek_tokens_total', { endpoint => $ep, model => $model, type => 'input_cache_miss' }), $k->{miss},
           "tokens_total{$ep,$model,input_cache_miss} == SDK sum $k->{miss}");
        is($m->value('deepseek_tokens_total', { endpoint => $ep, model => $model, type => 'output' }), $k->{output},
           "tokens_total{$ep,$model,output} == SDK sum $k->{output}");
        is($m->value('deepseek_tokens_total', { endpoint => $ep, model => $model }), $k->{total},
           "tokens_total{$ep,$model} over types == SDK total_tokens sum $k->{total}");
        is($m->value('deepseek_reasoning_tokens_total', { endpoint => $ep, model => $model }), $k->{reasoning},
           "reasoning_tokens_total{$ep,$model} == SDK sum $k->{reasoning}");
        is($m->value('deepseek_requests_total', { endpoint => $ep, model => $model, status => '200' }), $n{$ep}{$model},
           "requests_total{$ep,$model,200} == $n{$ep}{$model} SDK calls");
    }
}
is($m->value('deepseek_requests_total'), scalar(@calls), 'requests_total == calls made (no retries)');
is($t->mock_stats->{total}, scalar(@calls), 'the mock saw exactly the calls made');
is($m->value('deepseek_errors_total'), 0, 'no errors');
is($m->value('deepseek_usage_missing_total'), 0, 'no usage missing');

$t->stop;
done_testing;
