#!/usr/bin/perl
# Issue 10, the protobuf scrape streamed: a family is sent as one or more
# whole MetricFamily messages, each the Metrics of a batch of series that
# fit the encoder's bounded scratch; exemplars in the classic buckets.
#  A. 6,000 label sets (native latency, exemplars) read by a slow client:
#     the body decodes strictly, the large families come in several parts,
#     and merged by name they equal the text scrape of the same quiescent
#     state family by family (the same series once each, the same values).
#  B. The worker's peak RSS grows by less than 1 MB over that scrape, while
#     the body is 2.8 MB (the zones copied whole grew it by ~10 MB).
#  C. Exemplars: the protobuf body's equal the OpenMetrics ones exactly
#     (trace_id, value, timestamp in ms), on the same buckets; one above
#     the last bound comes with an explicit "+Inf" bucket.
#  D. A real Prometheus 2.42 with native-histograms,exemplar-storage scrapes
#     it as protobuf: no scrape error, every sample ingested (split families
#     included), the native count exact, and /api/v1/query_exemplars gives
#     request ids the client saw, on "+Inf" too.

use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/lib', dirname(abs_path(__FILE__)) . '/../tools/lib';
use Time::HiRes qw(time sleep);
use IO::Socket::IP;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use DSM::Test;
use DSM::Metrics;
use DSM::Protobuf;

# Prometheus 2.42's Accept with --enable-feature=native-histograms
my $PROM_NATIVE = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
    . 'encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.7,'
    . 'text/plain;version=0.0.4;q=0.6,*/*;q=0.5';
my $PB_CT = 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited';

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone big:64m native=latency exemplars;
    deepseek_metrics_zone ex:1m buckets=0.1 histograms=latency exemplars;
    deepseek_metrics_exemplar $request_id;

    server {
        listen 127.0.0.1:%%PORT%%;
        add_header X-Request-Id $request_id always;
        proxy_set_header Accept-Encoding "";
        location / {
            deepseek_metrics ex;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
        }
        location /fast/ {
            deepseek_metrics ex;
            deepseek_metrics_exemplar off;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
        }
        location /fill {
            deepseek_metrics big;
            deepseek_metrics_label u $arg_u;
            return 204;
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

my $sets = 6000;
my $port = $t->port('PORT');
my $mport = $t->port('METRICS_PORT');

# label set u=i gets 1 request, every 7th a second one
sub expected { my ($i) = @_; return $i % 7 == 0 ? 2 : 1 }

sub fill { return $t->pipelined(204, @_) }

my @paths = map { "/fill?u=$_" } 1 .. $sets;
push @paths, map { "/fill?u=$_" } grep { $_ % 7 == 0 } 1 .. $sets;
is(fill(@paths), scalar @paths, scalar(@paths) . " requests, $sets label sets");

# zone ex: latencies above 0.1 s (its one bucket: "+Inf") with exemplars,
# under it without (Prometheus 2.42 keeps one exemplar of a native
# histogram a scrape: the first bucket's that has one)
my %seen;
for my $i (1 .. 4) {
    my $r = $t->chat(stream => 1, $i % 2 ? (mock => 'keepalive_ms=200') : (path => '/fast/chat/completions'),
                     timeout => 10);
    $seen{ $r->{headers}{'x-request-id'} // '' } = $i % 2 ? 'inf' : 'low' if $r->{status} == 200;
}
is(scalar(keys %seen), 4, 'zone ex: 4 requests, each with its X-Request-Id');
$t->scrape_settled;

sub vm {
    my ($key) = @_;
    my ($pid) = $t->worker_pids;
    open my $f, '<', "/proc/$pid/status" or return -1;
    while (<$f>) { return $1 * 1024 if /^\Q$key\E:\s+(\d+) kB/ }
    return -1;
}

# GET on its own socket, reading 16 KB then sleeping 2 ms, bounded
sub slow_get {
    my ($accept) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $mport, Proto => 'tcp',
                                Timeout => 5) or die "connect: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 16384);
    $s->syswrite("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: $accept\r\nConnection: close\r\n\r\n");
    my ($raw, $reads) = ('', 0);
    my $deadline = time + 60;
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        next unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 16384);
        last unless $n;
        $raw .= $buf;
        $reads++;
        sleep 0.002;
    }
    close $s;
    my $he = index($raw, "\r\n\r\n");
    my $head = $he < 0 ? $raw : substr($raw, 0, $he);
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    my ($ct) = $head =~ m{^Content-Type: (.*?)\r$}mi;
    my ($body, $complete) = $head =~ /^Transfer-Encoding: chunked\r$/mi
        ? DSM::Test::_dechunk(substr($raw, $he + 4)) : (substr($raw, $he + 4), 0);
    return { status => $status // 0, ct => $ct // '', body => $body, complete => $complete,
             reads => $reads, timed_out => time >= $deadline };
}

# ------------------------------------------------------------------ A, B
my $hwm0 = vm('VmHWM');
ok($hwm0 > 0, 'worker VmHWM readable');
my $r = slow_get($PROM_NATIVE);
my $hwm1 = vm('VmHWM');
is($r->{status} . '|' . $r->{ct}, "200|$PB_CT", 'A: slow client, protobuf: 200');
ok(!$r->{timed_out} && $r->{complete}, 'A: body complete (chunked, last chunk seen)');
my $bytes = length $r->{body};
ok($bytes > 2_500_000, "A: a large body ($bytes bytes, $r->{reads} reads)");
my @parts = eval { DSM::Protobuf->decode($r->{body}) };
is($@, '', 'A: every MetricFamily message decodes strictly');
my @fams = DSM::Protobuf->merge(@parts);
my %pbfam = map { $_->{name} => $_ } @fams;
my $LAT = 'deepseek_request_latency_seconds';
ok(($pbfam{$LAT}{parts} // 0) > 1, "A: $LAT in " . ($pbfam{$LAT}{parts} // 0) . ' parts');
ok(($pbfam{deepseek_requests_total}{parts} // 0) > 1,
   'A: deepseek_requests_total in ' . ($pbfam{deepseek_requests_total}{parts} // 0) . ' parts');
my $grew = $hwm1 - $hwm0;
# ~0.5 MB here (buffers, scratch, the label cache); ASan's allocator (redzones,
# a quarantine that does not hand freed memory back at once) about doubles it
my $limit = $t->is_asan ? 1536 * 1024 : 1024 * 1024;
ok($grew < $limit, sprintf('B: worker peak RSS grew by %d bytes (< %.1f MB) for a %d-byte body',
                           $grew, $limit / 1048576, $bytes));

my $text = $t->scrape(accept => 'text');
my $om = $t->scrape(accept => 'openmetrics');
my $again = $t->http(GET => '/metrics', port => $mport, headers => { Accept => $PROM_NATIVE });
is($again->{body}, $r->{body}, 'quiescent: the same protobuf body again, read fast');

my %with_samples;
$with_samples{ $_->{family} } = 1 for $text->all_samples;
is(join(',', map { $_->{name} } @fams), join(',', grep { $with_samples{$_} } $text->families),
   'A: merged, the same families with samples, in the same order');

sub key_of { return DSM::Protobuf->sample_key(@_) }
my $dups = 0;
for my $fam (grep { $with_samples{$_} } $text->families) {
    my $pf = $pbfam{$fam} or next;
    is($pf->{help} . '|' . $pf->{type}, $text->help($fam) . '|' . $text->type($fam), "A: $fam: HELP and TYPE");
    my %want = map { (key_of($_) => $_->{value}) } grep { $_->{family} eq $fam } $text->all_samples;
    my %got;
    for my $s (DSM::Protobuf->samples($pf)) {
        $dups++ if exists $got{ key_of($s) };
        $got{ key_of($s) } = $s->{value};
    }
    is_deeply([ sort keys %got ], [ sort keys %want ], "A: $fam: the same series (" . scalar(keys %want) . ')');
    my @diff = grep { exists $got{$_} && $got{$_} != $want{$_} } sort keys %want;
    is(scalar(@diff), 0, "A: $fam: the same values")
        or diag join("\n", map { "$_: text $want{$_}, protobuf $got{$_}" } @diff[0 .. ($#diff > 9 ? 9 : $#diff)]);
}
is($dups, 0, 'A: no series twice across the parts');
my @lat = grep { $_->{labels}{zone} eq 'big' } @{ $pbfam{$LAT}{metrics} };
is(scalar(grep { defined $_->{histogram}{schema} } @lat), $sets, "A: $sets native latency histograms");
my $ncount = 0;
$ncount += $_->{histogram}{zero_count} + eval { my %b = DSM::Protobuf->native_buckets($_->{histogram}); my $n = 0; $n += $_ for values %b; $n } for @lat;
is($ncount, $text->value("${LAT}_count", { zone => 'big' }), 'A: the native buckets add up to the count');

# ------------------------------------------------------------------ C
# "le|labels" => exemplar, from both bodies
my (%pbx, %omx);
for my $f (grep { $_->{type} eq 'histogram' } @fams) {
    for my $m (@{ $f->{metrics} }) {
        for my $b (@{ $m->{histogram}{buckets} }) {
            next unless $b->[2];
            my $k = key_of({ name => "$f->{name}_bucket", labels => { %{ $m->{labels} }, le => $b->[0] } });
            my $x = $b->[2];
            $pbx{$k} = join('|', map { "$_=$x->{labels}{$_}" } sort keys %{ $x->{labels} })
                . "|$x->{value}|" . sprintf('%.0f', $x->{timestamp} * 1000);
        }
    }
}
for my $s ($om->exemplars(undef, {})) {
    my $x = $s->{exemplar};
    $omx{ key_of($s) } = join('|', map { "$_=$x->{labels}{$_}" } sort keys %{ $x->{labels} })
        . "|$x->{value}|" . sprintf('%.0f', $x->{ts} * 1000);
}
is(scalar(keys %omx), $sets + 1, 'C: OpenMetrics: an exemplar per big series, one in zone ex');
is_deeply(\%pbx, \%omx, 'C: the protobuf exemplars are the OpenMetrics ones (buckets, ids, values, ms)');
my @inf = grep { /zone="ex"/ && /le="inf"/i } keys %pbx;
is(scalar @inf, 1, 'C: zone ex: the exemplar above 0.1 s on an explicit +Inf bucket');
my ($exh) = grep { $_->{labels}{zone} eq 'ex' } @{ $pbfam{$LAT}{metrics} };
my $infb = $exh && $exh->{histogram}{buckets}[-1];
is($infb && "$infb->[0]|$infb->[1]", 9**9**9 . '|' . $text->value("${LAT}_count", { zone => 'ex' }),
   'C: the +Inf bucket counts every observation');
ok($infb && $seen{ $infb->[2]{labels}{trace_id} } eq 'inf', 'C: its trace_id is a slow request the client saw');

# ------------------------------------------------------------------ D
SKIP: {
    skip 'prometheus not installed', 7 unless system('command -v prometheus >/dev/null') == 0;
    require DSM::Stack;

    my $dir = DSM::Stack::tempdir();
    my $prom = DSM::Stack->prometheus(dir => $dir, args => [ '--enable-feature=native-histograms,exemplar-storage' ],
                                      config => DSM::Stack::scrape_config($mport));
    # what Prometheus 2.42 appends: one sample a Metric (with the flag it
    # takes every protobuf histogram as a native one, even zone ex's)
    my $samples = 0;
    $samples += @{ $_->{metrics} } for @fams;
    my $tg = DSM::Stack::wait_for('target scraped', 30, sub {
        my $x = $prom->api('/api/v1/targets');
        my ($a) = @{ $x->{data}{activeTargets} || [] };
        return $a && $a->{health} eq 'up' ? $a : undef;
    });
    is($tg && $tg->{lastError}, '', 'D: target up, no scrape error');
    my $got = DSM::Stack::wait_for('scrape_samples_scraped', 30, sub {
        my $v = $prom->value('scrape_samples_scraped');
        return defined $v && $v == $samples ? $v : undef;
    });
    is($got, $samples, "D: scrape_samples_scraped is every sample of the split families ($samples)")
        or diag 'scrape_samples_scraped ' . ($prom->value('scrape_samples_scraped') // 'none');
    is($prom->value('count(deepseek_requests_total{zone="big"})'), $sets, "D: $sets series of a split family");
    is($prom->value("histogram_count(sum(${LAT}{zone=\"big\"}))"),
       $text->value("${LAT}_count", { zone => 'big' }), 'D: the native count, exact');

    my $now = time;
    my $res = $prom->api('/api/v1/query_exemplars', query => "${LAT}{zone=\"ex\"}",
                         start => $now - 600, end => $now + 60);
    is($res->{status}, 'success', 'D: query_exemplars succeeds') or diag explain $res;
    my %ids;
    for my $s (@{ $res->{data} || [] }) {
        $ids{ $_->{labels}{trace_id} } = $seen{ $_->{labels}{trace_id} } // 'unseen' for @{ $s->{exemplars} };
    }
    is(join(',', sort values %ids), 'inf',
       'D: zone ex: the "+Inf" bucket\'s exemplars are slow requests the client saw');
    $res = $prom->api('/api/v1/query_exemplars', query => "${LAT}{zone=\"big\"}",
                      start => $now - 600, end => $now + 60);
    is(scalar @{ $res->{data} || [] }, $sets, "D: zone big: exemplars of $sets series");

    $prom->stop;
}

$t->stop;
done_testing;
