#!/usr/bin/perl
# Issue 3, "Must show": memory per request stays constant for a 50 MB streamed
# response. The mock streams ~50 MB of SSE (X-Mock size=52428800, generated lazily);
# the client reads and discards it while the test samples the nginx worker's VmRSS
# (/proc/PID/status) every 50 ms. Growth over the baseline (after a warm-up
# request) must stay below 8 MB, and the usage at the very end of the stream must
# still be counted.
#
# Variants (locations): proxy_buffering off; proxy_buffering on (the module switches
# SSE to unbuffered); proxy_buffering on + deepseek_metrics_stream_unbuffered off
# (nginx spools to its temp file, the copy filter reads it back for the module);
# and a 50 MB non-streaming JSON body with proxy_buffering on.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::IP;
use IO::Select;
use JSON::PP ();
use DSM::Test;

my $SIZE = 52428800;
my $LIMIT_KB = 8 * 1024;

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:4m;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics deepseek;
        proxy_set_header Accept-Encoding "";
        location /off/      { deepseek_metrics_label variant off;      proxy_buffering off; proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
        location /on/       { deepseek_metrics_label variant on;       proxy_buffering on;  proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
        location /buffered/ { deepseek_metrics_label variant buffered; proxy_buffering on;  proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
                              deepseek_metrics_stream_unbuffered off; }
        # positive control (no module): 32 x 1 MB proxy buffers, no temp file, a client that
        # pauses: nginx holds ~32 MB in memory -- proves the RSS sampling sees growth
        location /control/  { deepseek_metrics off; proxy_buffering on; proxy_buffers 32 1m; proxy_busy_buffers_size 2m;
                              proxy_max_temp_file_size 0; proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
        location /json/     { deepseek_metrics_label variant json;     proxy_buffering on;  proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;
my ($worker) = $t->worker_pids;
ok($worker, "worker pid $worker");

sub rss_kb {
    open my $f, '<', "/proc/$worker/status" or return undef;
    while (<$f>) { return $1 if /^VmRSS:\s+(\d+)\s+kB/ }
    return undef;
}

# streams the response, discarding it; samples the worker RSS; returns stats
sub big_request {
    my ($path, $stream, $mock, $pause) = @_;
    my $body = JSON::PP->new->encode({ model => 'deepseek-flash', stream => $stream ? JSON::PP::true : JSON::PP::false,
                                       messages => [ { role => 'user', content => 'long' } ] });
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $t->port('PORT'), Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    $s->syswrite("POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\nX-Mock: $mock\r\n\r\n$body");
    my $sel = IO::Select->new($s);
    my ($bytes, $tail, $head, $max, @samples) = (0, '', '', 0);
    my $t0 = time;
    my ($next, $deadline, $lastb) = ($t0, $t0 + 50, 0);
    while (time < $deadline) {
        # every 50 ms, and every 2 MB received: a fast transfer is sampled too
        if (time >= $next || $bytes - $lastb >= 2 * 1048576) {
            my $r = rss_kb();
            if (defined $r) { push @samples, $r; $max = $r if $r > $max }
            $next = time + 0.05;
            $lastb = $bytes;
        }
        next if $pause && time < $t0 + $pause && sleep 0.05;
        next unless $sel->can_read(0.05);
        my $n = sysread($s, my $buf, 262144);
        last unless $n;
        $head .= $buf if length $head < 4096;
        $bytes += $n;
        $tail = substr($tail . $buf, -512);
    }
    close $s;
    my $r = rss_kb();
    $max = $r if defined $r && $r > $max;
    return { bytes => $bytes, tail => $tail, head => $head, max => $max, samples => scalar @samples,
             elapsed => time - $t0, end => $r };
}

# warm-up: every variant once with a small body, so that pools, buffers and the
# shared-memory pages for these series are touched before the baseline
for my $v (qw(off on buffered json)) {
    big_request("/$v/chat/completions", $v ne 'json', 'size=200000');
}
my $m0 = $t->scrape;

my $t_all = time;
for my $v (qw(off on buffered json)) {
    my $base = rss_kb();
    my $r = big_request("/$v/chat/completions", $v ne 'json', "size=$SIZE");
    my $growth = $r->{max} - $base;
    note(sprintf('%s: %.1f MB in %.1f s, RSS baseline %d kB, max %d kB (+%d kB), after %d kB, %d samples',
                 $v, $r->{bytes} / 1048576, $r->{elapsed}, $base, $r->{max}, $growth, $r->{end} // -1, $r->{samples}));
    like($r->{head}, qr{^HTTP/1\.1 200}, "$v: 200");
    cmp_ok($r->{bytes}, '>', $SIZE * 0.98, "$v: the whole ~50 MB body was received ($r->{bytes} bytes)");
    like($r->{tail}, $v eq 'json' ? qr/"prompt_cache_miss_tokens":12\}/ : qr/data: \[DONE\]\n\n(?:\r\n0\r\n\r\n)?$/,
         "$v: complete to the last byte");
    cmp_ok($r->{samples}, '>=', 5, "$v: RSS sampled during the transfer");
    cmp_ok($growth, '<', $LIMIT_KB, "$v: worker RSS growth during/after the 50 MB response < 8 MB (+$growth kB)");
}
note(sprintf('all variants in %.1f s', time - $t_all));

# positive control last (it leaves the worker's RSS raised)
{
    my $base = rss_kb();
    my $r = big_request('/control/chat/completions', 0, "size=$SIZE", 1.5);
    note(sprintf('control: %.1f MB, RSS baseline %d kB, max %d kB', $r->{bytes} / 1048576, $base, $r->{max}));
    cmp_ok($r->{max} - $base, '>', 16 * 1024, 'control: the sampler sees ~32 MB of proxy buffers (so the bound above can fail)');
}

# the usage at the end of each 50 MB body was read (mock defaults: hit 8, miss 12, output 30)
my $m = $t->scrape_settled;
for my $v (qw(off on buffered json)) {
    for my $ty ([ 'input_cache_hit', 8 ], [ 'input_cache_miss', 12 ], [ 'output', 30 ]) {
        my $d = $m->value('deepseek_tokens_total', { variant => $v, type => $ty->[0] })
              - $m0->value('deepseek_tokens_total', { variant => $v, type => $ty->[0] });
        is($d, $ty->[1], "$v: $ty->[0] tokens of the 50 MB response counted ($d)");
    }
    is($m->value('deepseek_requests_total', { variant => $v, status => '200' }), 2, "$v: 2 requests counted");
    if ($v ne 'json') {
        is($m->value('deepseek_time_to_first_token_seconds_count', { variant => $v }), 2, "$v: TTFT observed");
    }
}
is($m->value('deepseek_usage_missing_total'), 0, 'no usage missing');
is($m->value('deepseek_errors_total'), 0, 'no errors');

$t->stop;
done_testing;
