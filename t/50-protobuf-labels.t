#!/usr/bin/perl
# Issue 10, the protobuf scrape's label cache: the label pairs of the
# largest zone's series are encoded once a scrape into a bounded cache
# (512 KB, 128 bytes a series at most), the rest once per family.
#  A. 1,800 label sets of ~280 bytes of labels (more than the cache): the
#     body decodes, and merged by name it equals the text scrape of the
#     same quiescent state family by family: the cached series, those
#     after the cache is full, each once with its own labels.
#  B. A second, smaller zone whose series have the same indexes: its
#     Metrics carry its own labels, not the cached ones; two statuses of a
#     series each with its own code.
#  C. The families after the first read only the series the first pass
#     found something of theirs in: a latency histogram whose observations
#     are all above its last bound ("+Inf" only) is still sent.

use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/lib', dirname(abs_path(__FILE__)) . '/../tools/lib';
use IO::Socket::IP;
use DSM::Test;
use DSM::Metrics;
use DSM::Protobuf;

my $PROM_NATIVE = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
    . 'encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.7,'
    . 'text/plain;version=0.0.4;q=0.6,*/*;q=0.5';

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone big:16m;
    deepseek_metrics_zone small:1m histograms=latency;
    deepseek_metrics_zone inf:1m buckets=0.1 histograms=latency;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /big {
            deepseek_metrics big;
            deepseek_metrics_label u $arg_u;
            deepseek_metrics_label pad $arg_pad;
            return 204;
        }
        location /small {
            deepseek_metrics small;
            deepseek_metrics_label v $arg_v;
            return 204;
        }
        location /inf/ {
            deepseek_metrics inf;
            proxy_set_header Accept-Encoding "";
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
        }
        location /small404 {
            deepseek_metrics small;
            deepseek_metrics_label v $arg_v;
            return 404;
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

my $sets = 1800;
my $port = $t->port('PORT');
my $mport = $t->port('METRICS_PORT');

# 204 and 404 count
sub fill { return $t->pipelined('(?:204|404)', @_) }

# a value of 250 bytes (a value keeps 255), different for each set
sub pad { my ($i) = @_; return substr(sprintf('%05d', $i) x 50, 0, 250) }

my @paths = map { "/big?u=$_&pad=" . pad($_) } 1 .. $sets;
push @paths, map { "/small?v=s$_" } 1 .. 40;
push @paths, map { "/small404?v=s$_" } grep { $_ % 3 == 0 } 1 .. 40;
is(fill(@paths), scalar @paths, scalar(@paths) . ' requests');
my $slow = $t->chat(stream => 1, path => '/inf/chat/completions', mock => 'keepalive_ms=200',
                    timeout => 10);
is($slow->{status}, 200, 'C: a stream slower than 0.1 s');
$t->scrape_settled;

my $text = $t->scrape(accept => 'text');
my $r = $t->http(GET => '/metrics', port => $mport, headers => { Accept => $PROM_NATIVE });
is($r->{status}, 200, 'protobuf: 200');
my $text2 = $t->scrape(accept => 'text');
is($text2->raw, $text->raw, 'quiescent: the text is the same before and after');

my @parts = eval { DSM::Protobuf->decode($r->{body}) };
is($@, '', 'every MetricFamily message decodes');
my @fams = DSM::Protobuf->merge(@parts);
my %pbfam = map { $_->{name} => $_ } @fams;

my %with_samples;
$with_samples{ $_->{family} } = 1 for $text->all_samples;
is(join(',', map { $_->{name} } @fams), join(',', grep { $with_samples{$_} } $text->families),
   'the same families with samples, in the same order');

sub key_of { return DSM::Protobuf->sample_key(@_) }

my $dups = 0;
for my $fam (grep { $with_samples{$_} } $text->families) {
    my $pf = $pbfam{$fam} or next;
    my %want = map { (key_of($_) => $_->{value}) } grep { $_->{family} eq $fam } $text->all_samples;
    my %got;
    for my $s (DSM::Protobuf->samples($pf)) {
        $dups++ if exists $got{ key_of($s) };
        $got{ key_of($s) } = $s->{value};
    }
    my @miss = grep { !exists $got{$_} } sort keys %want;
    my @extra = grep { !exists $want{$_} } sort keys %got;
    is(scalar(@miss) . '|' . scalar(@extra), '0|0',
       "$fam: the same series (" . scalar(keys %want) . ')')
        or diag join("\n", 'missing:', @miss[0 .. ($#miss > 4 ? 4 : $#miss)],
                     'extra:', @extra[0 .. ($#extra > 4 ? 4 : $#extra)]);
    my @diff = grep { exists $got{$_} && $got{$_} != $want{$_} } sort keys %want;
    is(scalar(@diff), 0, "$fam: the same values");
}
is($dups, 0, 'no series twice');

# A: all the label sets, the last ones past the cache
my @req = grep { ($_->{labels}{zone} // '') eq 'big' }
          map { DSM::Protobuf->samples($_) } grep { $_->{name} eq 'deepseek_requests_total' } @fams;
is(scalar(@req), $sets, "A: zone big: $sets label sets in deepseek_requests_total");
my $bad = grep { $_->{labels}{pad} ne pad($_->{labels}{u}) } @req;
is($bad, 0, 'A: each with its own labels');
ok(length($r->{body}) > 1800 * 280, 'A: the labels are more than the cache holds ('
   . length($r->{body}) . ' bytes)');

# B: the small zone's own labels, its two statuses
my @small = grep { ($_->{labels}{zone} // '') eq 'small' }
            map { DSM::Protobuf->samples($_) } grep { $_->{name} eq 'deepseek_requests_total' } @fams;
is(scalar(@small), 40 + 13, 'B: zone small: 40 label sets, 13 with a 404 too');
is(scalar(grep { !defined $_->{labels}{v} || defined $_->{labels}{u} } @small), 0,
   'B: with their own labels (v), not the big zone\'s (u)');
my %codes;
$codes{ $_->{labels}{status} }++ for @small;
is(join(',', map { "$_=$codes{$_}" } sort keys %codes), '204=40,404=13', 'B: each status with its code');

# C: "+Inf" only
my ($inf) = grep { ($_->{labels}{zone} // '') eq 'inf' }
            map { @{ $_->{metrics} } } grep { $_->{name} eq 'deepseek_request_latency_seconds' } @fams;
ok($inf && $inf->{histogram}{count} == 1 && !grep({ $_->[1] } @{ $inf->{histogram}{buckets} }),
   'C: zone inf: the latency histogram, its one observation above 0.1 s');

$t->stop;
done_testing;
