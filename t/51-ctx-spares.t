#!/usr/bin/perl
# A worker keeps the contexts of finished responses for the next ones, up to
# 64 of each size (ngx_http_dsm_ctx_release()); more at once are freed one
# release later. 80 streams at once in one worker, twice: every one counted
# exactly, each wave's contexts taken from the spares the one before left.
# In the ASan build, a context lost or freed twice is a LeakSanitizer or
# AddressSanitizer report at the worker's exit, which the harness fails on.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time);
use IO::Socket::IP;
use IO::Select;
use DSM::Test;

my $N = 80;

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
        proxy_set_header Accept-Encoding "";
        proxy_buffering off;
        location / { proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

my $port = $t->port('PORT');
my $body = '{"model":"deepseek-flash","stream":true,'
    . '"messages":[{"role":"user","content":"Hello"}]}';
my $req = "POST /chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n"
    . "X-Mock: delay_ms=400\r\n\r\n$body";

# all N requests open at once; each stream takes about 1.2 s (3 gaps of 0.4 s)
sub wave {
    my (@s, %raw);
    for (1 .. $N) {
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
                                    Proto => 'tcp', Timeout => 5)
            or die "connect: $!";
        $s->syswrite($req);
        push @s, $s;
    }
    my $sel = IO::Select->new(@s);
    my $deadline = time + 30;
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(1)) {
            my $n = sysread($s, my $buf, 65536);
            if ($n) { $raw{$s} .= $buf; next }
            $sel->remove($s);
            close $s;
        }
    }
    die "wave: streams still open after 30 s\n" if $sel->count;
    return scalar grep { /^HTTP\/1\.1 200 .*data: \[DONE\]/s } values %raw;
}

for my $w (1 .. 2) {
    is(wave(), $N, "wave $w: $N streams at once, each complete");
    my $m = $t->scrape_settled(accept => 'text');
    is($m->value('deepseek_requests_total', { status => '200' }), $N * $w,
       "wave $w: every stream counted once");
    is($m->value('deepseek_tokens_total', { type => 'output' }), 30 * $N * $w,
       "wave $w: every stream's usage read");
    is($m->value('deepseek_time_to_first_token_seconds_count'), $N * $w,
       "wave $w: every stream's TTFT observed");
    is($m->value('deepseek_requests_in_flight'), 0, "wave $w: nothing in flight");
}

$t->stop;
done_testing;
