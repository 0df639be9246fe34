#!/usr/bin/perl
# A streamed scrape: 4,000 label sets make a 7.5 MB exposition, sent in a
# few reused buffers as it is formatted and resumed on the write event.
#  A. A slow client (small receive buffer, reads 16 KB then sleeps 2 ms,
#     bounded by a deadline) gets the whole body, OpenMetrics and text,
#     parsed strictly, every label set's count exact.
#  B. The worker's peak RSS (VmHWM) grows by less than 2 MB over the first
#     such scrape, while the body is 7.5 MB (a body built whole grows it by
#     more than the body).
#  C. A scrape served while another waits for its slow client is complete.
#  D. A client that closes mid-scrape leaves nginx healthy: the next scrape
#     is exact, and the error log has nothing above info since.
#  E. HTTP/1.0 (no chunked encoding): the body ends with the connection.
#  F. A body that fits in the first buffers keeps an exact Content-Length;
#     a larger one is chunked.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::IP;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use DSM::Test;
use DSM::Metrics;

my $PROM_ACCEPT = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
    . 'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

my $t = DSM::Test->new(workers => 1);
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone big:16m;
    deepseek_metrics_zone small:1m;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /fill {
            deepseek_metrics big;
            deepseek_metrics_label u $arg_u;
            return 204;
        }
        location /small {
            deepseek_metrics small;
            return 204;
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
        location = /metrics-small { deepseek_metrics_export small; }
    }
}
EOF
$t->start;

my $sets = 4000;
my $port = $t->port('PORT');
my $mport = $t->port('METRICS_PORT');

# label set u=i gets 1 request, every 7th a second one: its count is exact
sub expected { my ($i) = @_; return $i % 7 == 0 ? 2 : 1 }

sub fill { return $t->pipelined(204, @_) }

my @paths = map { "/fill?u=$_" } 1 .. $sets;
push @paths, map { "/fill?u=$_" } grep { $_ % 7 == 0 } 1 .. $sets;
push @paths, ('/small') x 3;
is(fill(@paths), scalar @paths, scalar(@paths) . ' requests, ' . ($sets + 1) . ' label sets');

sub vm {
    my ($key) = @_;
    my ($pid) = $t->worker_pids;
    open my $f, '<', "/proc/$pid/status" or return -1;
    while (<$f>) { return $1 * 1024 if /^\Q$key\E:\s+(\d+) kB/ }
    return -1;
}

# GET on its own socket; reads $chunk bytes, then sleeps $pause, until the
# end of the body or the deadline; $close_after: close after that many bytes
sub slow_get {
    my (%o) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $mport, Proto => 'tcp',
                                Timeout => 5) or die "connect: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 16384);
    $s->syswrite("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: $o{accept}\r\n"
                 . "Connection: close\r\n\r\n");
    my $raw = '';
    my $reads = 0;
    my $deadline = time + 60;
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        last if defined $o{close_after} && length $raw >= $o{close_after};
        next unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, $o{chunk});
        last unless $n;
        $raw .= $buf;
        $reads++;
        $o{during}->(length $raw) if $o{during};
        sleep $o{pause} if $o{pause};
    }
    close $s;
    my $he = index($raw, "\r\n\r\n");
    my $head = $he < 0 ? $raw : substr($raw, 0, $he);
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    my ($ct) = $head =~ m{^Content-Type: (.*?)\r$}mi;
    my ($cl) = $head =~ /^Content-Length: (\d+)\r$/mi;
    my ($body, $complete) = $head =~ /^Transfer-Encoding: chunked\r$/mi
        ? DSM::Test::_dechunk(substr($raw, $he + 4)) : (substr($raw, $he + 4), 0);
    $complete = 1 if defined $cl && length $body == $cl;
    return { status => $status // 0, ct => $ct // '', body => $body, complete => $complete,
             reads => $reads, timed_out => time >= $deadline, length => $cl,
             chunked => scalar($head =~ /^Transfer-Encoding: chunked\r$/mi) };
}

# every label set's requests and latency count, exact
sub check_exact {
    my ($m, $name) = @_;
    my (%req, %cnt);
    $req{ $_->{labels}{u} } = $_->{value}
        for $m->samples('deepseek_requests_total', { zone => 'big', status => '204' });
    $cnt{ $_->{labels}{u} } = $_->{value}
        for $m->samples('deepseek_request_latency_seconds_count', { zone => 'big' });
    my @bad = grep { ($req{$_} // 0) != expected($_) || ($cnt{$_} // 0) != expected($_) }
              1 .. $sets;
    is(scalar @bad, 0, "$name: $sets label sets, requests_total and latency _count exact")
        or diag 'first: u=' . join(', u=', map { "$_ " . ($req{$_} // 'none') . '/'
                                               . ($cnt{$_} // 'none') } @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
    is(scalar(keys %req), $sets, "$name: no other label set in zone big");
    is($m->value('deepseek_requests_total', { zone => 'small', status => '204' }), 3,
       "$name: zone small after zone big, exact");
    is($m->value('deepseek_metrics_series', { zone => 'big', state => 'used' }), $sets,
       "$name: series used");
}

# A, B: the first scrape of the full zone, OpenMetrics, read slowly
my $hwm0 = vm('VmHWM');
ok($hwm0 > 0, 'worker VmHWM readable');
my $r = slow_get(accept => $PROM_ACCEPT, chunk => 16384, pause => 0.002);
my $hwm1 = vm('VmHWM');
is($r->{status}, 200, 'A: slow client, OpenMetrics: 200');
ok(!$r->{timed_out} && $r->{complete}, 'A: body complete');
ok($r->{chunked} && !defined $r->{length}, 'F: a large body is chunked');
my $bytes = length $r->{body};
ok($bytes > 7_000_000, "A: a large body ($bytes bytes, $r->{reads} reads)");
my $m = eval { DSM::Metrics->parse($r->{body}, $r->{ct}) };
ok($m, 'A: OpenMetrics body parses strictly') or diag $@;
check_exact($m, 'A: OpenMetrics') if $m;
my $grew = $hwm1 - $hwm0;
ok($grew < 2 * 1024 * 1024, "B: worker peak RSS grew by $grew bytes (< 2 MB) for a $bytes-byte body");

# A, C: text, read slowly; a fast scrape while it waits
my ($fast, $during_done);
$r = slow_get(accept => 'text/plain;version=0.0.4', chunk => 16384, pause => 0.002,
              during => sub {
                  my ($got) = @_;
                  return if $during_done || $got < 1_000_000;
                  $during_done = 1;
                  $fast = eval { $t->scrape(accept => 'text') };
              });
is($r->{status}, 200, 'A: slow client, text: 200');
ok(!$r->{timed_out} && $r->{complete}, 'A: text body complete');
$m = eval { DSM::Metrics->parse($r->{body}, $r->{ct}) };
ok($m, 'A: text body parses strictly') or diag $@;
check_exact($m, 'A: text') if $m;
ok($fast, 'C: a scrape during the slow one') or diag $@;
check_exact($fast, 'C: text, concurrent') if $fast;

# D: clients that close mid-scrape, waiting and reading
my $off = $t->log_offset;
$r = slow_get(accept => 'text/plain;version=0.0.4', chunk => 16384, close_after => 65536);
ok(length $r->{body} < $bytes, 'D: closed after ' . length($r->{body}) . ' body bytes');
$r = slow_get(accept => $PROM_ACCEPT, chunk => 65536, pause => 0.2, close_after => 300_000);
ok(length $r->{body} < $bytes, 'D: closed while nginx waited, after ' . length($r->{body}));
$m = eval { $t->scrape(accept => 'openmetrics') };
ok($m, 'D: next scrape fine') or diag $@;
check_exact($m, 'D: after the closed ones') if $m;
my @above = grep { /\[(?:warn|error|crit|alert|emerg)\]/ } split /\n/, $t->log_since($off);
is(scalar @above, 0, 'D: nothing above info in the error log') or diag join "\n", @above[0 .. ($#above < 4 ? $#above : 4)];

# E: HTTP/1.0 has no chunked encoding: the body ends with the connection
$r = $t->http(GET => '/metrics', port => $mport, http10 => 1,
              headers => { Accept => 'text/plain;version=0.0.4' });
is($r->{status}, 200, 'E: HTTP/1.0 scrape');
ok(!defined $r->{headers}{'transfer-encoding'}, 'E: not chunked');
$m = eval { DSM::Metrics->parse($r->{body}, $r->{headers}{'content-type'}) };
ok($m, 'E: HTTP/1.0 body parses strictly') or diag $@;
check_exact($m, 'E: HTTP/1.0') if $m;

# F: one small zone: formatted whole before the header
$r = $t->http(GET => '/metrics-small', port => $mport,
              headers => { Accept => 'text/plain;version=0.0.4' });
is($r->{status}, 200, 'F: small scrape');
ok(!defined $r->{headers}{'transfer-encoding'}, 'F: small scrape not chunked');
is($r->{headers}{'content-length'}, length $r->{body}, 'F: Content-Length exact');
$m = eval { DSM::Metrics->parse($r->{body}, $r->{headers}{'content-type'}) };
is($m && $m->value('deepseek_requests_total', { status => '204' }), 3, 'F: small zone exact');

$t->stop;
done_testing;
