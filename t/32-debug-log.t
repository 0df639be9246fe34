#!/usr/bin/perl
# With `error_log ... debug` an operator can follow the module's decisions:
# the header filter's mode (body read as JSON or SSE, not read and why, SSE
# proxied unbuffered), the parse outcome and the usage found at the log phase,
# the series key and the overflow series, and the zone kept over a reload.
# Needs the module compiled with NGX_DEBUG: the static ASan build (make asan,
# --with-debug); skipped for binaries without --with-debug and for a dynamic
# module built without it (make build: Debian's nginx is --with-debug, the .so
# is not).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;

my $t = DSM::Test->new(workers => 1);
my $V = `$t->{nginx} -V 2>&1`;
plan skip_all => 'nginx built without --with-debug' unless $V =~ /--with-debug/;
if (!$t->is_static) {
    my $so = do { local $/; open my $f, '<:raw', $t->module or die "$t->{module}: $!\n"; <$f> };
    plan skip_all => 'module built without NGX_DEBUG' if index($so, 'deepseek metrics: body read as') < 0;
}

$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
error_log %%PREFIX%%/logs/debug.log debug;
http {
    deepseek_metrics_zone z:1m;
    deepseek_metrics_zone tiny:1m max_series=1;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
        location /tiny/ {
            deepseek_metrics tiny;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
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

my $debug = 0;
sub since { my $c = $t->read_log('debug.log'); my $s = substr($c, $debug); $debug = length $c; $s }

# request => the debug lines it must leave (each a regex), in this order
my @cases = (
    [ 'JSON chat completion', sub { $t->chat },
      [ qr/deepseek metrics: body read as JSON$/m,
        qr/deepseek metrics: series key endpoint "chat_completions" model "deepseek-flash" labels 0 hash [0-9a-f]{8} in zone "z"$/m,
        qr/deepseek metrics: counted status 200 model index \d+$/m,
        qr/deepseek metrics: body parsed, events 1, finish 1, error class 0, usage found fields 7f$/m,
        qr/deepseek metrics: usage prompt 20 completion 30 hit 8 miss 12 reasoning 0$/m ] ],
    [ 'SSE stream, proxied unbuffered', sub { $t->chat(stream => 1) },
      [ qr/deepseek metrics: body read as SSE$/m,
        qr/deepseek metrics: SSE proxied unbuffered$/m,
        qr/deepseek metrics: body parsed, events 6, finish 1, error class 0, usage found fields 7f$/m,
        qr/deepseek metrics: usage prompt 20 completion 30 hit 8 miss 12 reasoning 0$/m ] ],
    [ 'Anthropic messages', sub { $t->http(POST => '/anthropic/v1/messages',
                                          body => '{"model":"deepseek-flash","messages":[]}') },
      [ qr/deepseek metrics: body read as Anthropic JSON$/m ] ],
    [ 'models: not read', sub { $t->http(GET => '/models') },
      [ qr/deepseek metrics: body not read, endpoint kind 2$/m,
        qr/deepseek metrics: series key endpoint "models" model "unknown" /m ] ],
    [ 'gzip: not read', sub { $t->chat(mock => 'gzip=1') },
      [ qr/deepseek metrics: body not read, Content-Encoding "gzip"$/m,
        qr/deepseek metrics: body compressed, /m ] ],
    [ 'no usage in the body', sub { $t->chat(stream => 1, mock => 'no_usage=1') },
      [ qr/deepseek metrics: body parsed, events \d+, finish 1, error class 0, usage missing fields 0$/m ] ],
    [ 'first series of a zone of one', sub { $t->chat(path => '/tiny/chat/completions') },
      [ qr/deepseek metrics: series key endpoint "chat_completions" model "deepseek-flash" labels 0 hash [0-9a-f]{8} in zone "tiny"$/m ] ],
    [ 'zone full: overflow', sub { $t->chat(path => '/tiny/chat/completions', model => 'deepseek-reasoner') },
      [ qr/deepseek_metrics_zone "tiny": no new series after 1, the overflow series counts it$/m,
        qr/deepseek metrics: series key endpoint "chat_completions" model "deepseek-reasoner" labels 0 hash [0-9a-f]{8} in zone "tiny": overflow$/m,
        qr/deepseek metrics: counted status 200 model index \d+ in the overflow series$/m ] ],
    [ 'reload keeps the zones', sub { $t->reload or die "reload failed\n" },
      [ qr/deepseek_metrics_zone "z": reused with \d+ of \d+ series$/m,
        qr/deepseek_metrics_zone "tiny": reused with 1 of 1 series$/m ] ],
);

since();
for my $c (@cases) {
    my ($name, $run, $want) = @$c;
    $run->();
    # the log phase runs after the client has the response: wait for it
    my $log = '';
    for (1 .. 100) {
        $log .= since();
        last unless grep { $log !~ $_ } @$want;
        select undef, undef, undef, 0.05;
    }
    my $pos = 0;
    for my $re (@$want) {
        my $rest = substr($log, $pos);
        ok($rest =~ $re, "$name: $re") or diag "debug lines:\n" . join("\n", grep { /deepseek/ } split /\n/, $log);
        $pos += $+[0] if $rest =~ $re;
    }
}

$t->stop;
done_testing;
