#!/usr/bin/perl
# Protobuf exposition and native histograms.
#  - negotiation: what Prometheus 2.42 sends with --enable-feature=native-histograms
#    gets delimited protobuf, what it sends without the flag OpenMetrics as before;
#    a protobuf range without proto=MetricFamily/encoding=delimited, or with q=0, text
#  - the protobuf body of a quiescent state decodes (t/lib/DSM/Protobuf.pm) to the
#    same samples as a text scrape of that state, family by family: names, HELP,
#    TYPE, label sets (escaped, multi-byte and replaced bytes included), values
#  - native buckets: schema 3, zero threshold 2^-10 s, and exact bucket counts for
#    TTFTs chosen a few ms above a bucket's lower bound (the probe zone)
#  - a real Prometheus 2.42 with native histograms scrapes it: histogram_count() on
#    the bare family name equals the requests sent, histogram_quantile(0.9, ...)
#    equals the quantile Prometheus' interpolation gives on the scraped buckets,
#    the classic histograms of families without native= keep their _bucket series
#  - a Prometheus without the flag, scraping the same target, gets every classic
#    bucket as before and no native histogram
use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/lib', dirname(abs_path(__FILE__)) . '/../tools/lib';
use Time::HiRes qw(time sleep);
use DSM::Test;
use DSM::Metrics;
use DSM::Protobuf;
use DSM::Stack;

my $PB_CT = 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited';
# Prometheus 2.42's Accept, with and without --enable-feature=native-histograms
my $PROM_NATIVE = 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;'
    . 'encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;'
    . 'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';
my $PROM_PLAIN = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
    . 'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:10m native=latency,ttft;
    deepseek_metrics_zone probe:1m histograms=ttft native=ttft;
    deepseek_metrics_price deepseek-flash USD hit=0.006 miss=0.30 output=1.20;
    deepseek_metrics_price deepseek-reasoner CNY hit=0.30 miss=9 output=27;
    deepseek_metrics_label team $http_x_team;
    proxy_set_header Accept-Encoding "";
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics deepseek;
        location / { proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
        location /dead/ { proxy_pass http://127.0.0.1:1/; }
        location /slow/ {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_read_timeout 1s;
        }
    }
    server {
        listen 127.0.0.1:%%PORT2%%;
        deepseek_metrics probe;
        location / { proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
        location = /probe { deepseek_metrics_export probe; }
    }
}
EOF
my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t with native=') or diag $out;
$t->start;

sub get {
    my ($path, $accept) = @_;
    return $t->http(GET => $path, port => $t->port('METRICS_PORT'),
                    headers => defined $accept ? { Accept => $accept } : {});
}

# ------------------------------------------------------------------ negotiation
$t->chat;
my @neg = (
    # name                                   Accept                                                   content type
    [ 'Prometheus 2.42, native histograms', $PROM_NATIVE,                                             $PB_CT ],
    [ 'Prometheus 2.42, no flag',           $PROM_PLAIN,                                              'application/openmetrics-text; version=1.0.0; charset=utf-8' ],
    [ 'protobuf alone',                     'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited', $PB_CT ],
    [ 'protobuf, spaces, q=0.9 over text',  'text/plain;q=0.5, application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; q=0.9', $PB_CT ],
    [ 'protobuf without proto=',            'application/vnd.google.protobuf;encoding=delimited',                  'text/plain; version=0.0.4; charset=utf-8' ],
    [ 'protobuf, encoding=text',            'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text', 'text/plain; version=0.0.4; charset=utf-8' ],
    [ 'protobuf, another message',          'application/vnd.google.protobuf;proto=io.prometheus.client.Metric;encoding=delimited', 'text/plain; version=0.0.4; charset=utf-8' ],
    [ 'protobuf q=0',                       'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0', 'text/plain; version=0.0.4; charset=utf-8' ],
    [ 'protobuf by wildcard only',          'application/*',                                                       'text/plain; version=0.0.4; charset=utf-8' ],
    [ 'no Accept',                          undef,                                                                 'text/plain; version=0.0.4; charset=utf-8' ],
);
for my $c (@neg) {
    my $r = get('/metrics', $c->[1]);
    is($r->{headers}{'content-type'}, $c->[2], "negotiation: $c->[0]");
}
my $r = get('/metrics', $PROM_NATIVE);
is($r->{headers}{vary}, 'Accept', 'protobuf: Vary: Accept');
is($r->{headers}{'content-length'}, length $r->{body}, 'protobuf: Content-Length is the body');
my $h = $t->http(HEAD => '/metrics', port => $t->port('METRICS_PORT'), headers => { Accept => $PROM_NATIVE });
is($h->{headers}{'content-type'} . '|' . length($h->{body}), "$PB_CT|0", 'protobuf: HEAD, no body');

# ------------------------------------------------------------------ traffic
# mixed traffic, and a user label with a quote, a backslash, UTF-8 and an invalid byte
DSM::Stack::traffic_round($t);
$t->chat(headers => { 'X-Team' => "q\"b\\s \xc3\xa9t\xe9" }) for 1 .. 2;
$t->chat(stream => 1, headers => { 'X-Team' => "q\"b\\s \xc3\xa9t\xe9" });

# TTFTs in the probe zone: keep-alives for N ms, then the first token;
# N is 2 ms above a bucket's lower bound 2^((i-1)/8) s, so bucket i has it
my @probe = ([ 299, -13, 1 ], [ 597, -5, 2 ], [ 1002, 1, 3 ]);
for my $p (@probe) {
    for (1 .. $p->[2]) {
        $t->chat(stream => 1, port => $t->port('PORT2'), mock => "keepalive_ms=$p->[0];keepalive_every_ms=50",
                 timeout => 10);
    }
}
$t->scrape_settled;

# ------------------------------------------------------------------ same numbers
my $text = $t->scrape(accept => 'text');
my $pr = get('/metrics', $PROM_NATIVE);
my $text2 = $t->scrape(accept => 'text');
is($text2->raw, $text->raw, 'quiescent: the text is the same before and after the protobuf scrape');
my @fams = eval { DSM::Protobuf->decode($pr->{body}) };
is($@, '', 'the protobuf body decodes (delimited MetricFamily)');

my %pbfam = map { $_->{name} => $_ } @fams;
my %with_samples;
$with_samples{ $_->{family} } = 1 for $text->all_samples;
is(join(',', map { $_->{name} } @fams), join(',', grep { $with_samples{$_} } $text->families),
   'the same families with samples, in the same order');

sub key_of { return DSM::Protobuf->sample_key(@_) }
for my $fam (grep { $with_samples{$_} } $text->families) {
    my $pf = $pbfam{$fam} or next;
    is($pf->{help} . '|' . $pf->{type}, $text->help($fam) . '|' . $text->type($fam), "$fam: HELP and TYPE");
    my %want = map { (key_of($_) => $_->{value}) } grep { $_->{family} eq $fam } $text->all_samples;
    my %got = map { (key_of($_) => $_->{value}) } DSM::Protobuf->samples($pf);
    is_deeply([ sort keys %got ], [ sort keys %want ], "$fam: the same series");
    my @diff = grep { exists $got{$_} && $got{$_} != $want{$_} } sort keys %want;
    is(scalar(@diff), 0, "$fam: the same values (" . scalar(keys %want) . ' samples)')
        or diag join("\n", map { "$_: text $want{$_}, protobuf $got{$_}" } @diff[0 .. ($#diff > 9 ? 9 : $#diff)]);
}
my ($team) = grep { ($_->{labels}{team} // '') ne '' } map { @{ $_->{metrics} } } $pbfam{deepseek_requests_total};
is($team && $team->{labels}{team}, "q\"b\\s \xc3\xa9t\xef\xbf\xbd", 'a label value: quote, backslash, UTF-8, replaced byte');

# native fields only where native= asks for them; the zone's start as created
my $start = $text->value('deepseek_metrics_zone_start_time_seconds', { zone => 'deepseek' });
for my $fam (grep { $_->{type} eq 'histogram' } @fams) {
    # deepseek: native=latency,ttft; probe: native=ttft
    my $re = qr/^deepseek_(request_latency|time_to_first_token)_seconds$/;
    my $native_in = { deepseek => $fam->{name} =~ $re ? 1 : 0,
                      probe => $fam->{name} eq 'deepseek_time_to_first_token_seconds' ? 1 : 0 };
    my ($bad_native, $bad_sum, $bad_created) = (0, 0, 0);
    for my $m (@{ $fam->{metrics} }) {
        my $hh = $m->{histogram};
        my $native = $native_in->{ $m->{labels}{zone} };
        $bad_created++ unless ($hh->{created} // -1) == $text->value('deepseek_metrics_zone_start_time_seconds',
                                                                     { zone => $m->{labels}{zone} });
        if (!$native) { $bad_native++ if defined $hh->{schema} || @{ $hh->{spans} }; next }
        $bad_native++ unless ($hh->{schema} // -99) == 3 && ($hh->{zero_threshold} // 0) == 2**-10;
        my %b = DSM::Protobuf->native_buckets($hh);
        my $n = $hh->{zero_count} // 0;
        $n += $_ for values %b;
        $bad_sum++ unless $n == $hh->{count};
    }
    is("$bad_native|$bad_sum|$bad_created", '0|0|0',
       "$fam->{name}: native buckets where native= names it (schema 3, zero threshold 2^-10, "
       . 'adding up to the count), classic only elsewhere; created = the zone start');
}

# the probe zone: exact buckets
my @pp = DSM::Protobuf->decode(get('/probe', $PROM_NATIVE)->{body});
my ($ttft) = grep { $_->{name} eq 'deepseek_time_to_first_token_seconds' } @pp;
my $hh = $ttft && $ttft->{metrics}[0]{histogram};
my %b = $hh ? DSM::Protobuf->native_buckets($hh) : ();
is(join(' ', map { "$_=$b{$_}" } sort { $a <=> $b } keys %b) . ' zero=' . ($hh->{zero_count} // 0),
   join(' ', map { "$_->[1]=$_->[2]" } @probe) . ' zero=0', 'probe TTFTs: native buckets -13, -5, 1 (and their spans)');
is(join(',', map { "$_->[0]:$_->[1]" } @{ $hh->{spans} || [] }), '-13:1,7:1,5:1',
   'probe: three spans (gaps of 7 and 5 empty buckets are not worth a zero run)');
is(join(',', @{ $hh->{deltas} || [] }), '1,1,1', 'probe: deltas 1, +1, +1');

# ------------------------------------------------------------------ Prometheus 2.42
SKIP: {
skip 'prometheus not installed', 10 unless system('command -v prometheus >/dev/null') == 0;

my $dir = DSM::Stack::tempdir();
my $metrics = $t->port('METRICS_PORT');
my $prom = DSM::Stack->prometheus(dir => $dir, args => [ '--enable-feature=native-histograms' ],
                                  config => DSM::Stack::scrape_config($metrics));
# and one without the flag, as before: OpenMetrics, classic histograms only
my $plain = DSM::Stack->prometheus(dir => $dir, name => 'plain',
                                   config => DSM::Stack::scrape_config($metrics));
my $t0 = time;

# the counts Prometheus must show for a protobuf body: TTFT and latency, zone deepseek
sub counts {
    my ($body) = @_;
    my %c;
    for my $f (DSM::Protobuf->decode($body)) {
        for my $m (@{ $f->{metrics} }) {
            next unless $f->{type} eq 'histogram' && $m->{labels}{zone} eq 'deepseek';
            $c{ $f->{name} } += $m->{histogram}{count};
        }
    }
    return \%c;
}
my $TTFT = 'deepseek_time_to_first_token_seconds';
my $LAT = 'deepseek_request_latency_seconds';

my $before = get('/metrics', $PROM_NATIVE)->{body};
my $seen = DSM::Stack::wait_for('first scrapes', 30, sub {
    ($prom->value("histogram_count(sum(${TTFT}{zone=\"deepseek\"}))") // -1) == counts($before)->{$TTFT}
});
ok($seen, 'Prometheus scraped the native TTFT histogram');

# more traffic, with TTFTs of 0 to 400 ms, while Prometheus scrapes
DSM::Stack::traffic_round($t, ok_only => 1);
for my $ka (0, 0, 0, 120, 120, 250, 400) {
    $t->chat(stream => 1, mock => "keepalive_ms=$ka;keepalive_every_ms=50");
}
$t->scrape_settled;
my $after = get('/metrics', $PROM_NATIVE)->{body};
my $want = counts($after);
my $text_now = $t->scrape(accept => 'text');

$seen = DSM::Stack::wait_for('the new state scraped', 30, sub {
    ($prom->value("histogram_count(sum(${TTFT}{zone=\"deepseek\"}))") // -1) == $want->{$TTFT}
});
is($prom->value("histogram_count(sum(${TTFT}{zone=\"deepseek\"}))"), $want->{$TTFT},
   "histogram_count(sum(${TTFT}{zone=\"deepseek\"})) = the streams counted ($want->{$TTFT})");
is($prom->value("histogram_count(sum(${LAT}{zone=\"deepseek\"}))"), $text_now->value('deepseek_requests_total', { zone => 'deepseek' }),
   "histogram_count(sum(${LAT}{zone=\"deepseek\"})) = deepseek_requests_total of the zone");

# the quantile Prometheus 2.42 interpolates (linearly) in the increase since the
# first scrape: computed here from the two protobuf bodies
sub native_sum {
    my ($body) = @_;
    my (%b, $zero);
    for my $f (grep { $_->{name} eq $TTFT } DSM::Protobuf->decode($body)) {
        for my $m (grep { $_->{labels}{zone} eq 'deepseek' } @{ $f->{metrics} }) {
            my %x = DSM::Protobuf->native_buckets($m->{histogram});
            $b{$_} += $x{$_} for keys %x;
            $zero += $m->{histogram}{zero_count};
        }
    }
    return ($zero, \%b);
}
my ($z0, $b0) = native_sum($before);
my ($z1, $b1) = native_sum($after);
my %d = map { ($_ => $b1->{$_} - ($b0->{$_} // 0)) } keys %$b1;
my @bk = ([ 0, 2**-10, $z1 - $z0 ], map { [ 2**(($_ - 1) / 8), 2**($_ / 8), $d{$_} ] } sort { $a <=> $b } keys %d);
my $total = 0;
$total += $_->[2] for @bk;
my ($rank, $cum, $q) = (0.9 * $total, 0, undef);
for my $x (@bk) {
    $cum += $x->[2];
    next if $cum < $rank;
    $q = $x->[0] + ($x->[1] - $x->[0]) * (($rank - ($cum - $x->[2])) / $x->[2]);
    last;
}
my $got = $prom->value("histogram_quantile(0.9, sum(rate(${TTFT}{zone=\"deepseek\"}[1m])))");
ok(time - $t0 < 55, 'the rate window still holds the first scrape');
is(defined $got ? sprintf('%.9g', $got) : 'none', sprintf('%.9g', $q // -1),
   "histogram_quantile(0.9, sum(rate(${TTFT}{zone=\"deepseek\"}[1m]))) = the linear interpolation in the native buckets");

# a histogram without native= stays classic: its _bucket series, every one
my $tpot = scalar $text_now->samples('deepseek_time_per_output_token_seconds_bucket');
is($prom->value('count(deepseek_time_per_output_token_seconds_bucket)'), $tpot,
   "classic histograms keep their _bucket series ($tpot)");
my $ttft_buckets = scalar $text_now->samples("${TTFT}_bucket");
DSM::Stack::wait_for('plain Prometheus has the new state', 30, sub {
    ($plain->value("sum(${TTFT}_count)") // -1) == $text_now->value("${TTFT}_count")
});
is($plain->value("count(${TTFT}_bucket)"), $ttft_buckets,
   "Prometheus without the flag: every classic bucket of the native zone ($ttft_buckets)");
is(scalar @{ $plain->query("histogram_count($TTFT)") }, 0, 'Prometheus without the flag: no native histogram');
is(scalar @{ $prom->query("${TTFT}_bucket{zone=\"deepseek\"}") }, 0,
   'Prometheus 2.42 with the flag keeps only the native histogram of a native= histogram (documented)');
$plain->stop;
my $tg = $prom->api('/api/v1/targets');
my ($target) = @{ $tg->{data}{activeTargets} || [] };
is(($target->{health} // '') . '|' . ($target->{lastError} // 'none'), 'up|', 'the target is up, no scrape error');
$prom->stop;
}

done_testing;
