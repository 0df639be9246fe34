#!/usr/bin/perl
# Issue 10, exemplars (deepseek_metrics_exemplar, the zone's "exemplars"):
#   - with nginx's clock frozen and stepped (libfaketime), the exact exemplar of
#     every classic bucket: the X-Request-Id the client saw, the observed value,
#     the timestamp; the latest observation of a bucket wins, other buckets and
#     histograms keep theirs;
#   - ids: printable ASCII of 1..36 bytes kept (quote and backslash escaped);
#     longer, empty, non-ASCII, space or tab ids are not kept (the bucket keeps
#     its previous exemplar), and a worker logs the first refusal once;
#   - nothing stored where the directive is off, nothing emitted from a zone
#     without "exemplars", never any in text 0.0.4;
#   - configuration: the parameter, the directive, the error where a counted
#     location's zone has no storage, and the bytes a series nginx -t reports;
#   - a real Prometheus 2.42 with --enable-feature=exemplar-storage scrapes
#     OpenMetrics and /api/v1/query_exemplars returns the request ids the client
#     saw; a Prometheus without the flag scrapes the same target cleanly.

use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/lib', dirname(abs_path(__FILE__)) . '/../tools/lib';
use POSIX ();
use Time::HiRes qw(sleep);
use Time::Local qw(timegm);
use DSM::Test;
use DSM::Metrics;

plan(skip_all => "libfaketime not installed ($DSM::Test::FAKETIME_LIB; apt-get install faketime)")
    unless DSM::Test::has_faketime();

# ------------------------------------------------------------------ the parser
# DSM::Metrics parses exemplars strictly: each malformed line is refused
my $HEAD = "# TYPE h histogram\n";
my $TAIL = "h_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# EOF\n";
my @BAD = (
    # case                           the le="1.0" line                                     error
    [ 'two spaces before #',        'h_bucket{le="1.0"} 1  # {a="b"} 0.5',                qr/malformed sample/ ],
    [ 'no space after #',           'h_bucket{le="1.0"} 1 #{a="b"} 0.5',                  qr/malformed sample/ ],
    [ 'no label set',               'h_bucket{le="1.0"} 1 # 0.5',                          qr/without a label set/ ],
    [ 'no value',                   'h_bucket{le="1.0"} 1 # {a="b"}',                      qr/malformed exemplar/ ],
    [ 'bad value',                  'h_bucket{le="1.0"} 1 # {a="b"} x',                    qr/bad sample value/ ],
    [ 'bad timestamp',              'h_bucket{le="1.0"} 1 # {a="b"} 0.5 1e',               qr/bad exemplar timestamp/ ],
    [ 'junk after the timestamp',   'h_bucket{le="1.0"} 1 # {a="b"} 0.5 1 2',              qr/malformed exemplar/ ],
    [ 'trailing comma',             'h_bucket{le="1.0"} 1 # {a="b",} 0.5',                 qr/trailing comma/ ],
    [ 'bad escape',                 'h_bucket{le="1.0"} 1 # {a="\\x"} 0.5',                qr/bad escape/ ],
    [ 'bad label name',             'h_bucket{le="1.0"} 1 # {1a="b"} 0.5',                 qr/invalid exemplar label name/ ],
    [ 'duplicate label',            'h_bucket{le="1.0"} 1 # {a="b",a="c"} 0.5',            qr/duplicate exemplar label/ ],
    [ 'not UTF-8',                  "h_bucket{le=\"1.0\"} 1 # {a=\"\xff\"} 0.5",           qr/not valid UTF-8/ ],
    [ '129 characters',             'h_bucket{le="1.0"} 1 # {a="' . ('x' x 128) . '"} 0.5', qr/129 characters, more than 128/ ],
    [ 'value above the bucket',     'h_bucket{le="1.0"} 1 # {a="b"} 1.5',                  qr/exemplar value 1.5 above le="1.0"/ ],
    [ 'value below the bucket',     'h_bucket{le="1.0"} 1 # {a="b"} 0.25',                 qr/not above the previous le/ ],
);
for my $c (@BAD) {
    my ($case, $line, $re) = @$c;
    my $body = $HEAD . "h_bucket{le=\"0.5\"} 0\n$line\n$TAIL";
    eval { DSM::Metrics->parse($body, 'openmetrics') };
    like($@, $re, "parser refuses: $case");
}
eval { DSM::Metrics->parse("# TYPE g gauge\ng 1 # {a=\"b\"} 1\n# EOF\n", 'openmetrics') };
like($@, qr/exemplar on 'g'/, 'parser refuses: an exemplar on a gauge');
eval { DSM::Metrics->parse($HEAD . "h_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1 # {a=\"b\"} 1\n# EOF\n",
                           'openmetrics') };
like($@, qr/exemplar on 'h_count'/, 'parser refuses: an exemplar on _count');
eval { DSM::Metrics->parse("# TYPE c_total counter\nc_total 1 # {a=\"b\"} 1\n", 'text') };
like($@, qr/malformed sample/, 'parser refuses: an exemplar in text 0.0.4');
my $okm = DSM::Metrics->parse($HEAD . "h_bucket{le=\"0.5\"} 0\n"
    . 'h_bucket{le="1.0"} 1 # {trace_id="a\\"b\\\\c",' . ('y' x 100) . '="' . ('z' x 15) . "\"} 1.0 1700000000.123\n"
    . $TAIL, 'openmetrics');
my ($okx) = $okm->exemplars('h_bucket');
is_deeply($okx && $okx->{exemplar},
          { labels => { trace_id => 'a"b\\c', ('y' x 100) => 'z' x 15 }, value => 1, ts => '1700000000.123',
            line => 3 },
          'parser: a valid exemplar of exactly 128 characters, unescaped');

# ------------------------------------------------------------------ configuration
my @CONF = (
    # case                                   zone parameters       directives in the counted location              nginx -t
    [ 'exemplars zone and directive',        'exemplars',          'deepseek_metrics_exemplar $request_id;',       'ok' ],
    [ 'directive, zone without storage',     '',                   'deepseek_metrics_exemplar $request_id;',
      qr/"deepseek_metrics_exemplar" is set where requests are counted in zone "z", which has no exemplar storage: add "exemplars"/ ],
    [ 'off where the zone has none',         '',                   'deepseek_metrics_exemplar off;',               'ok' ],
    [ 'parameter with a value',              'exemplars=on',       '',                                             qr/invalid parameter "exemplars=on", expected "exemplars"/ ],
    [ 'parameter misspelt',                  'exemplar',           '',                                             qr/invalid parameter "exemplar", expected max_series=/ ],
    [ 'parameter twice',                     'exemplars exemplars', '',                                            qr/duplicate parameter "exemplars"/ ],
    [ 'directive twice',                     'exemplars',          'deepseek_metrics_exemplar $request_id; deepseek_metrics_exemplar $connection;', qr/"deepseek_metrics_exemplar" directive is duplicate/ ],
    [ 'empty value',                         'exemplars',          'deepseek_metrics_exemplar "";',                qr/"deepseek_metrics_exemplar" directive takes a non-empty value/ ],
    [ 'unknown variable',                    'exemplars',          'deepseek_metrics_exemplar $no_such_var;',      qr/unknown "no_such_var" variable/ ],
    # the bytes a series with the default histograms: 1032 (t/18), + 84 exemplars of 64 bytes
    [ 'size asked for, defaults',            'max_series=1000',    '',                                             qr/\(1032 bytes a series\)/ ],
    [ 'size asked for, exemplars',           'max_series=1000 exemplars', '',                                      qr/\(6408 bytes a series\)/ ],
    [ 'size asked for, latency exemplars',   'max_series=1000 histograms=latency exemplars', '',                   qr/\(1400 bytes a series\)/ ],
);
for my $c (@CONF) {
    my ($case, $params, $loc, $re) = @$c;
    my $t = DSM::Test->new;
    my $size = $params =~ /max_series/ ? '64k' : '1m';
    $t->write_conf(<<"EOF");
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:$size $params;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { deepseek_metrics z; $loc return 200; }
    }
}
EOF
    my ($code, $out) = $t->nginx_t;
    if ($re eq 'ok') {
        is($code, 0, "nginx -t: $case") or diag $out;
    } else {
        like($out, $re, "nginx -t: $case");
    }
}

# ------------------------------------------------------------------ exact exemplars
my $t = DSM::Test->new(workers => 1);
$t->allow(qr/deepseek_metrics_exemplar: an id of 37 bytes is not kept/);
$t->mock_start;
sub set_clock { $t->set_clock(@_) }
set_clock('2026-12-07 01:00:00');

$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
%%FAKETIME%%
http {
    deepseek_metrics_zone z:4m buckets=0.5,1,2 tpot_buckets=0.5,1,2
                          histograms=latency,ttft,tpot exemplars;
    deepseek_metrics_zone plain:1m buckets=0.5,1,2 tpot_buckets=0.5,1,2
                          histograms=latency,ttft,tpot;
    deepseek_metrics_exemplar $request_id;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z;
        deepseek_metrics_label case $http_x_case;
        add_header X-Request-Id $request_id always;
        proxy_set_header Accept-Encoding "";
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
        }
        location /hdr/ {
            deepseek_metrics_exemplar $http_x_trace;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
        }
        location /off/ {
            deepseek_metrics_exemplar off;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
        }
        location /plain/ {
            deepseek_metrics plain;
            deepseek_metrics_exemplar off;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export z; }
        location = /plain   { deepseek_metrics_export plain; }
    }
}
EOF
my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t') or diag $out;
$t->start;

# one request, the clock stepped from $from to $to while it waits on the mock:
# every time of it is exactly $to - $from (0 s from the first token on)
my %ID;
sub request {
    my ($name, $case, $from, $to, %o) = @_;
    set_clock($from);
    my $pid;
    if ($to ne $from) {
        $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) { sleep 0.5; set_clock($to); POSIX::_exit(0) }
    }
    my $r = $t->chat(headers => { 'X-Case' => $case, %{ $o{headers} || {} } }, %o);
    waitpid($pid, 0) if $pid;
    is($r->{status}, 200, "$name: 200");
    like($r->{headers}{'x-request-id'} // '', qr/^[0-9a-f]{32}$/, "$name: the client sees X-Request-Id");
    $ID{$name} = $r->{headers}{'x-request-id'};
    # the next request must not step the clock back under this one's count
    $t->scrape_settled;
}

my $SLOW = 'keepalive_ms=1500;keepalive_every_ms=100';
request('zero',   'a', '2026-12-07 01:00:00', '2026-12-07 01:00:00');
request('stream', 'b', '2026-12-07 01:00:10', '2026-12-07 01:00:11', stream => 1, mock => $SLOW);
request('two',    'b', '2026-12-07 01:00:20', '2026-12-07 01:00:22', mock => 'sleep_ms=1500');
request('one',    'b', '2026-12-07 01:00:30', '2026-12-07 01:00:31', mock => 'sleep_ms=1500');
request('five',   'b', '2026-12-07 01:00:40', '2026-12-07 01:00:45', mock => 'sleep_ms=1500');
# every time 0: the first bucket of each histogram, next to the "+Inf" of the one before
request('fast',   'b', '2026-12-07 01:00:48', '2026-12-07 01:00:48', stream => 1);
request('off',    'c', '2026-12-07 01:00:50', '2026-12-07 01:00:50', path => '/off/chat/completions');
request('plain',  'a', '2026-12-07 01:00:50', '2026-12-07 01:00:50', path => '/plain/chat/completions');

sub epoch { my ($d, $h, $mi, $s) = $_[0] =~ /^2026-12-(\d\d) (\d\d):(\d\d):(\d\d)$/; timegm($s, $mi, $h, $d, 11, 2026) }
my $T0 = epoch('2026-12-07 01:00:00');

my $m = $t->scrape(accept => 'openmetrics');
my %E = (
    # family, case, le                                   request   value  clock (s after $T0)
    'request_latency_seconds b 0.5'                  => [ 'fast',   '0.0', 48 ],
    'request_latency_seconds a 0.5'                  => [ 'zero',   '0.0', 0  ],
    'request_latency_seconds a 1.0'                  => undef,
    'request_latency_seconds b 1.0'                  => [ 'one',    '1.0', 31 ],   # the latest of two
    'request_latency_seconds b 2.0'                  => [ 'two',    '2.0', 22 ],
    'request_latency_seconds b +Inf'                 => [ 'five',   '5.0', 45 ],
    'time_to_first_token_seconds b 0.5'              => [ 'fast',   '0.0', 48 ],
    'time_to_first_token_seconds b 1.0'              => [ 'stream', '1.0', 11 ],
    'time_to_first_token_seconds b 2.0'              => undef,
    'time_to_first_token_seconds b +Inf'             => undef,
    'time_per_output_token_seconds b 0.5'            => [ 'fast',   '0.0', 48 ],   # was 'stream'
    'time_per_output_token_seconds b 1.0'            => undef,
    'request_latency_seconds c 0.5'                  => undef,       # directive off
);
for my $k (sort keys %E) {
    my ($fam, $case, $le) = split / /, $k;
    my @s = $m->samples("deepseek_${fam}_bucket", { case => $case, le => $le });
    is(scalar @s, 1, "$k: one bucket sample");
    my $x = $s[0] && $s[0]{exemplar};
    if (!$E{$k}) {
        ok(!$x, "$k: no exemplar");
        next;
    }
    my ($req, $value, $at) = @{ $E{$k} };
    is_deeply($x, { labels => { trace_id => $ID{$req} }, value => $value + 0, ts => ($T0 + $at) . '.000',
                    line => $s[0]{line} },
              "$k: trace_id of request '$req', value $value, timestamp \$T0 + $at s");
    like($m->raw, qr/\Q${\ "deepseek_${fam}_bucket"}\E\{[^}]*le="\Q$le\E"\} \d+ # \{trace_id="$ID{$req}"\} \Q$value\E \Q${\ ($T0 + $at)}\E\.000\n/,
         "$k: the exact text");
}
is(scalar(() = $m->exemplars(undef, {})), 8, '8 exemplars in all, on buckets only');

my $p = $t->scrape(path => '/plain', accept => 'openmetrics');
is($p->value('deepseek_request_latency_seconds_count', { case => 'a' }), 1, 'plain zone: the request is counted');
is(scalar(() = $p->exemplars(undef, {})), 0, 'plain zone (no "exemplars"): no exemplar');

my $text = $t->scrape(accept => 'text');
is($text->value('deepseek_request_latency_seconds_count', { case => 'b' }), 5, 'text 0.0.4: counted');
unlike($text->response->{body}, qr/ # /, 'text 0.0.4: no exemplar');

# ------------------------------------------------------------------ ids from a header
my @IDS = (
    # case                id sent in X-Trace            exemplar kept
    [ 'first',            'req-1',                      'req-1' ],
    [ '37 bytes',         'x' x 37,                     'req-1' ],
    [ 'none',             undef,                        'req-1' ],
    [ 'non-ASCII',        "caf\xc3\xa9",                'req-1' ],
    [ 'space',            'a b',                        'req-1' ],
    [ 'tab',              "a\tb",                       'req-1' ],
    [ 'quote, backslash', 'a"b\\c',                     'a"b\\c' ],
    [ '36 bytes',         'y' x 36,                     'y' x 36 ],
    [ 'all printable',    '!#$%&()*+-./:;<=>?@[]^_`{|}~', '!#$%&()*+-./:;<=>?@[]^_`{|}~' ],
);
set_clock('2026-12-07 01:01:00');
for my $c (@IDS) {
    my ($case, $id, $want) = @$c;
    my $r = $t->chat(path => '/hdr/chat/completions',
                     headers => { 'X-Case' => 'hdr', defined $id ? ('X-Trace' => $id) : () });
    is($r->{status}, 200, "id $case: 200");
    my $mm = $t->scrape_settled(accept => 'openmetrics');
    my ($s) = $mm->samples('deepseek_request_latency_seconds_bucket', { case => 'hdr', le => '0.5' });
    is($s && $s->{exemplar} && $s->{exemplar}{labels}{trace_id}, $want, "id $case: exemplar trace_id");
}
my @warn = grep { /is not kept/ } split /\n/, $t->read_log('error.log');
is(scalar @warn, 1, 'the first refused id is logged, once per worker');
like($warn[0] // '', qr/\[warn\].*an id of 37 bytes is not kept: at most 36 bytes of printable ASCII/,
     'the log line says why');

$t->stop;

# ------------------------------------------------------------------ real clock, 2 workers
my $u = DSM::Test->new(workers => 2);
$u->mock_start;
$u->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:4m exemplars;
    deepseek_metrics_zone race:1m histograms=latency exemplars;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z;
        deepseek_metrics_exemplar $request_id;
        add_header X-Request-Id $request_id always;
        proxy_set_header Accept-Encoding "";
        location / { proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
        location /race/ {
            deepseek_metrics race;
            deepseek_metrics_exemplar $http_x_trace;
            return 200;
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export z; }
        location = /race    { deepseek_metrics_export race; }
    }
}
EOF
$u->start;

# two workers write the same bucket's exemplar while scrapes read it: an id is
# a letter repeated 4 x its rank ("aaaa", "bbbbbbbb", ...), so a copy taken
# during a write would show a mix or a wrong length; never seen (the seqlock),
# but a torn read cannot be forced, so this bounds the risk, it does not prove it
{
    my @kids;
    for my $k (0, 1) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            for my $i (1 .. 400) {
                my $c = chr(ord('a') + ($i + $k) % 8);
                $u->http(GET => '/race/', headers => { 'X-Trace' => $c x (4 * (ord($c) - 96)) });
            }
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    my ($scrapes, $seen, @bad) = (0, 0);
    while ($scrapes < 400 && grep { waitpid($_, POSIX::WNOHANG()) == 0 } @kids) {
        my $mm = $u->scrape(path => '/race', accept => 'openmetrics');
        $scrapes++;
        for my $x ($mm->exemplars('deepseek_request_latency_seconds_bucket', {})) {
            my $id = $x->{exemplar}{labels}{trace_id};
            $seen++;
            push @bad, $id unless $id =~ /^([a-h])\1*$/ && length($id) == 4 * (ord($1) - 96);
        }
    }
    waitpid($_, 0) for @kids;
    my $mm = $u->scrape_settled(path => '/race');
    is($mm->value('deepseek_request_latency_seconds_count', {}), 800, 'race: 800 requests counted');
    ok($seen > 0, "race: $seen exemplars read in $scrapes scrapes during the writes");
    is("@bad", '', 'race: every exemplar read whole');
}

# ------------------------------------------------------------------ Prometheus
SKIP: {
    skip 'prometheus not installed', 1 unless system('command -v prometheus >/dev/null') == 0;
    require DSM::Stack;

    my %seen;
    my $traffic = sub {
        for my $i (1 .. 6) {
            my $r = $u->chat(stream => $i % 2, $i % 3 ? () : (mock => 'keepalive_ms=300'));
            $seen{ $r->{headers}{'x-request-id'} // '' } = 1 if $r->{status} == 200;
        }
    };
    $traffic->();

    my $dir = DSM::Stack::tempdir();
    my $metrics = $u->port('METRICS_PORT');
    my $conf = DSM::Stack::scrape_config($metrics);
    my $prom = DSM::Stack->prometheus(dir => $dir, name => 'exemplars', config => $conf,
                                      args => [ '--enable-feature=exemplar-storage' ]);
    my $plain = DSM::Stack->prometheus(dir => $dir, name => 'default', config => $conf);

    for my $pr ([ 'exemplar-storage', $prom ], [ 'no flags', $plain ]) {
        my ($what, $pm) = @$pr;
        my $tg = DSM::Stack::wait_for("$what: target up", 30, sub {
            my $r = $pm->api('/api/v1/targets');
            my ($x) = @{ $r->{data}{activeTargets} || [] };
            return $x && $x->{health} eq 'up' ? $x : undef;
        });
        ok($tg, "$what: target up");
        is($tg && $tg->{lastError}, '', "$what: no scrape error");
    }

    $traffic->();
    $u->scrape_settled;
    my $now = time;
    sleep 3;                                      # at least two scrapes after the traffic
    my $om = $u->scrape(accept => 'openmetrics');

    my $q = 'deepseek_request_latency_seconds_bucket';
    my $res = $prom->api('/api/v1/query_exemplars', query => $q, start => $now - 600, end => $now + 60);
    is($res->{status}, 'success', 'query_exemplars succeeds') or diag explain $res;
    my (@ids, $latest_ok, $series);
    ($latest_ok, $series) = (0, 0);
    for my $s (@{ $res->{data} || [] }) {
        $series++;
        push @ids, map { $_->{labels}{trace_id} } @{ $s->{exemplars} };
        my $last = $s->{exemplars}[-1];
        my ($b) = $om->samples("${q}", { le => $s->{seriesLabels}{le},
                                          endpoint => $s->{seriesLabels}{endpoint} });
        $latest_ok++ if $b && $b->{exemplar} && $last
                        && $b->{exemplar}{labels}{trace_id} eq $last->{labels}{trace_id}
                        && $b->{exemplar}{value} == $last->{value};
    }
    ok(@ids >= 2, scalar(@ids) . " exemplars in $series bucket series");
    is(scalar(grep { !$seen{$_} } @ids), 0, 'every trace_id is a request id the client saw');
    is($latest_ok, $series, "each series' latest exemplar is the bucket's exemplar on the module's page");
    my $ttft = $prom->api('/api/v1/query_exemplars', query => 'deepseek_time_to_first_token_seconds_bucket',
                          start => $now - 600, end => $now + 60);
    ok(scalar(@{ $ttft->{data} || [] }), 'TTFT exemplars too');
    is($plain->api('/api/v1/query', query => 'up')->{data}{result}[0]{value}[1], '1',
       'the default Prometheus scrapes the same target');

    $prom->stop;
    $plain->stop;
}
$u->stop;

done_testing;
