#!/usr/bin/perl
# Issue 8 (items 3 and 4).
#
#   3  the wall clock stepped back (NTP) while a request runs: every elapsed time is
#      clamped at 0 like $request_time (TTFT, first answer, queue wait, TPOT, latency and
#      the $deepseek_* variables), never a ~1.8e13 s observation. nginx runs under
#      libfaketime (system clock untouched); writing "-10s" to the timestamp file steps
#      its clock back.
#   4  a client that stops reading until send_timeout fires is a client failure:
#      errors{client_timeout} + usage_missing{client_abort}, not stream_truncated. A real
#      slow client: a socket with a small receive buffer that stops reading.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use Socket qw(SOL_SOCKET SO_RCVBUF);
use IO::Socket::IP;
use JSON::PP ();
use DSM::Test;

my $FAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
plan skip_all => "libfaketime not installed ($FAKETIME)" unless -e $FAKETIME;

my $t = DSM::Test->new(workers => 1);
$t->mock_start;   # before LD_PRELOAD is set: the mock keeps the real clock
my $stamp = $t->prefix . '/faketime';
sub step { my ($s) = @_; open my $f, '>', $stamp or die; print $f "$s\n"; close $f }
step('+0s');

$t->write_conf(<<'EOF2');
%%MODULE%%
%%COMMON%%
env LD_PRELOAD;
env FAKETIME_TIMESTAMP_FILE;
env FAKETIME_NO_CACHE;
env DONT_FAKE_MONOTONIC;
http {
    deepseek_metrics_zone deepseek:4m buckets=1,5 tpot_buckets=1,5;
    log_format times '$deepseek_ttft $deepseek_ttfat $deepseek_queue_wait $request_time';
    upstream mock { server 127.0.0.1:%%MOCK_PORT%%; }
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics deepseek;
        proxy_set_header Accept-Encoding "";
        send_timeout 1s;
        location /a/ { deepseek_metrics_label step a; proxy_pass http://mock/;
                       access_log %%PREFIX%%/logs/times.log times; }
        location /b/ { deepseek_metrics_label step b; proxy_pass http://mock/; }
        location /slow/ { deepseek_metrics_label step slow; proxy_pass http://mock/; }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF2
{
    local $ENV{LD_PRELOAD} = $FAKETIME;
    local $ENV{FAKETIME_TIMESTAMP_FILE} = $stamp;
    local $ENV{FAKETIME_NO_CACHE} = 1;
    local $ENV{DONT_FAKE_MONOTONIC} = 1;
    $t->start;
}

my $body = JSON::PP->new->canonical->encode({ model => 'deepseek-flash', stream => JSON::PP::true,
                                             messages => [ { role => 'user', content => 'hi' } ] });

# sends a streaming request; runs $during after $after seconds, while it is in progress
sub stream_with_step {
    my ($path, $mock, $after, $during) = @_;
    my $pid = fork // die;
    if (!$pid) {
        $t->http(POST => $path, body => $body, mock => $mock, timeout => 10);
        POSIX::_exit(0);
    }
    sleep $after;
    $during->();
    waitpid $pid, 0;
}

# a: the clock steps back while the request waits in DeepSeek's queue (keep-alives),
#    before the first data event: TTFT, first answer, queue wait and latency are 0
stream_with_step('/a/v1/chat/completions', 'keepalive_ms=800;keepalive_every_ms=100', 0.4, sub { step('-10s') });
# b: the clock steps back between the first token and the end: TPOT and latency are 0
stream_with_step('/b/v1/chat/completions', 'delay_ms=400', 0.6, sub { step('-20s') });

my $m = $t->scrape_settled;
diag(join "\n", grep { /step="[ab]"/ } split /\n/, $m->raw) if $ENV{DSM_DIAG};
my %h = (latency => 'deepseek_request_latency_seconds', ttft => 'deepseek_time_to_first_token_seconds',
         answer => 'deepseek_time_to_first_answer_token_seconds', queue => 'deepseek_queue_wait_seconds',
         tpot => 'deepseek_time_per_output_token_seconds');
my @zero = (a => [qw(latency ttft answer queue)], b => [qw(latency tpot)]);
while (my ($step, $names) = splice @zero, 0, 2) {
    for my $n (@$names) {
        is($m->value("$h{$n}_sum", { step => $step }), 0, "$step: $n observed as 0 (clock stepped back)");
        is($m->value("$h{$n}_bucket", { step => $step, le => '1.0' }), 1, "$step: $n in the first bucket");
    }
}
for my $step (qw(a b)) {
    for my $n (qw(latency ttft answer queue tpot)) {
        is($m->value("$h{$n}_bucket", { step => $step, le => '+Inf' }), 1, "$step: one $n observation");
    }
}
# the other histograms of a and b are observed after the step: small, first bucket
is($m->value("$h{tpot}_bucket", { step => 'a', le => '1.0' }), 1, 'a: tpot in the first bucket');
is($m->value("$h{ttft}_bucket", { step => 'b', le => '1.0' }), 1, 'b: ttft in the first bucket');

open my $lf, '<', $t->prefix . '/logs/times.log' or die;
my @lines = <$lf>;
close $lf;
is(scalar @lines, 1, 'one access log line');
is($lines[0], "0.000 0.000 0.000 0.000\n", '$deepseek_ttft/_ttfat/_queue_wait and $request_time are 0');
step('+0s');

# --- 4: a client stops reading; send_timeout (1 s) fires
sub errors_of {
    my ($m) = @_;
    my %s;
    for my $x (grep { ($_->{labels}{step} // '') eq 'slow' } $m->all_samples) {
        my $n = $x->{name};
        if ($n eq 'deepseek_errors_total') { $s{"error:$x->{labels}{reason}"} += $x->{value} }
        elsif ($n eq 'deepseek_usage_missing_total') { $s{"missing:$x->{labels}{reason}"} += $x->{value} }
        elsif ($n eq 'deepseek_requests_total') { $s{"status:$x->{labels}{status}"} += $x->{value} }
        elsif ($n eq 'deepseek_tokens_total') { $s{tokens} += $x->{value} }
    }
    return \%s;
}

for my $c (['stream', 1], ['JSON', 0]) {
    my ($name, $stream) = @$c;
    my $before = errors_of($t->scrape);
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $t->port('PORT'), Proto => 'tcp')
        or die "connect: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096);
    my $b = JSON::PP->new->canonical->encode({ model => 'deepseek-flash',
        stream => $stream ? JSON::PP::true : JSON::PP::false, messages => [ { role => 'user', content => 'hi' } ] });
    $s->syswrite("POST /slow/v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Mock: size=40000000\r\n"
                 . "Content-Type: application/json\r\nContent-Length: " . length($b) . "\r\n\r\n$b");
    sysread($s, my $buf, 1024);   # the headers, then nothing more
    my $after;
    for (1 .. 150) {   # bounded: 15 s
        $after = errors_of($t->scrape);
        last if ($after->{'status:200'} // 0) > ($before->{'status:200'} // 0);
        sleep 0.1;
    }
    close $s;
    my %d;
    for my $k (keys %$after) { my $dv = $after->{$k} - ($before->{$k} // 0); $d{$k} = $dv if $dv }
    is(join(' ', map { "$_=$d{$_}" } sort keys %d), 'error:client_timeout=1 missing:client_abort=1 status:200=1',
       "$name: a client that stopped reading is client_timeout, not stream_truncated");
}

$t->stop;
done_testing;
