#!/usr/bin/perl
# A cardinality flood takes no shared-memory lock once the zone is full, like
# requests of an existing series: nginx (master_process off) runs under
# callgrind, its counters are zeroed after the zone and the endpoint table
# are filled, and the calls to ngx_shmtx_lock/trylock during the flood are
# read from a callgrind dump (as bench/ does).
#  A. 1,000 requests, each a new label set, zone full: 0 locks.
#  B. 200 requests, each a new endpoint value, table and zone full: 0 locks.
#  C. 100 new priced series in a zone with room: 100 locks, one a series (its
#     currency is set when it is created, not by a second lock).
#  D. 1,000 requests of a label set without user labels in a full zone: the
#     worker remembers the overflow series like any series, no lookup at all.
# The counts stay exact: everything flooded is in the overflow series.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(WNOHANG);
use IO::Socket::IP;
use DSM::Test;

for my $tool (qw(valgrind callgrind_control h2load)) {
    plan skip_all => "$tool not found" unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

my $t = DSM::Test->new(workers => 1);
plan skip_all => 'callgrind is not run on a sanitizer build' if $t->is_asan;

my $chat = '{"id":"x","object":"chat.completion","created":1,"model":"deepseek-flash",'
    . '"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},'
    . '"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":30,'
    . '"total_tokens":50,"prompt_cache_hit_tokens":8,"prompt_cache_miss_tokens":12}}';

$t->write_conf(<<"EOF");
master_process off;
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone full:1m max_series=30;
    deepseek_metrics_zone priced:1m max_series=200;
    deepseek_metrics_zone tiny:1m max_series=1;
    deepseek_metrics_price deepseek-flash USD hit=0.006 miss=0.30 output=1.20;

    server {
        listen 127.0.0.1:%%PORT%%;
        default_type application/json;

        location /f/ {
            deepseek_metrics full;
            deepseek_metrics_label u \$arg_u;
            deepseek_metrics_endpoint \$arg_e;
            return 200 "ok\\n";
        }

        location /p/ {
            deepseek_metrics priced;
            deepseek_metrics_label u \$arg_u;
            return 200 '$chat';
        }

        location /t/ {
            deepseek_metrics tiny;
            return 200 '$chat';
        }

        location = /metrics-full { deepseek_metrics_export full; }
        location = /metrics-priced { deepseek_metrics_export priced; }
        location = /metrics-tiny { deepseek_metrics_export tiny; }
    }
}
EOF

my $port = $t->port('PORT');
my $prefix = $t->prefix;
$t->_release_ports;

my $cg = fork;
die "fork: $!" unless defined $cg;
if (!$cg) {
    open STDIN, '<', '/dev/null';
    open STDOUT, '>>', "$prefix/logs/stderr.log";
    open STDERR, '>>', "$prefix/logs/stderr.log";
    DSM::Test::_pdeathsig();
    exec 'valgrind', '--tool=callgrind', "--callgrind-out-file=$prefix/cg.out",
         '--dump-instr=no', '--compress-strings=no', '--compress-pos=no',
         $t->nginx, '-p', "$prefix/", '-c', 'conf/nginx.conf'
        or POSIX::_exit(127);
}

my $deadline = time + 90;
my $up = 0;
while (time < $deadline) {
    last if waitpid($cg, WNOHANG) == $cg;
    if (IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, Proto => 'tcp')) { $up = 1; last }
    sleep 0.2;
}
ok($up, 'nginx under callgrind is listening') or do {
    diag($t->read_log('stderr.log'));
    done_testing;
    exit;
};

sub h2load {
    my ($tag, @uris) = @_;
    (my $name = $tag) =~ s/\W+/-/g;
    my $f = "$prefix/uris-$name.txt";
    open my $fh, '>', $f or die "$f: $!";
    print $fh map { "http://127.0.0.1:$port$_\n" } @uris;
    close $fh;
    my $out = `h2load --h1 -n ${\ scalar @uris} -c 1 -m 1 -i $f 2>&1`;
    my ($c2) = $out =~ /status codes: (\d+) 2xx/;
    is($c2 // 0, scalar(@uris), "$tag: " . scalar(@uris) . ' requests answered 200') or diag $out;
}

my $dumps = 0;

# calls to the shared-memory mutex (or to the functions matching $re) since
# the last zeroing, from a fresh dump
sub locks {
    my ($re) = @_;
    $re //= qr/^ngx_shmtx_(?:lock|trylock)\b/;
    my @before = glob "$prefix/cg.out*";
    sleep 0.3;    # the last request's log phase runs just after its response
    system("callgrind_control -d $cg >/dev/null 2>&1") == 0 or diag('callgrind_control -d failed');
    my $file;
    my $d = time + 30;
    while (time < $d) {
        my %seen = map { $_ => 1 } @before;
        ($file) = grep { !$seen{$_} } glob "$prefix/cg.out*";
        last if $file;
        sleep 0.1;
    }
    return -1 unless $file;
    sleep 0.2;
    open my $fh, '<', $file or return -1;
    my ($callee, $n) = ('', 0);
    while (<$fh>) {
        if (/^cfn=(.*)$/) { $callee = $1; next }
        if (/^calls=(\d+)/) {
            my $calls = $1;
            $n += $calls if $callee =~ $re;
            $callee = '';
        }
    }
    return $n;
}

sub zero { system("callgrind_control -z $cg >/dev/null 2>&1") == 0 or diag('callgrind_control -z failed') }

# fill: 7 built-in + 25 endpoints fill the table, 30 series fill the zone
h2load('fill', map { "/f/?u=fill$_&e=ep$_" } 1 .. 40);
h2load('fill-priced', map { "/p/v1/chat/completions?u=fill$_" } 1 .. 5);

# a check that the counting works at all: the fill itself took locks
zero();
h2load('new series with room', map { "/p/v1/chat/completions?u=room$_" } 1 .. 10);
is(locks(), 10, 'control: 10 new series with room take 10 locks');

zero();
h2load('A flood', map { "/f/?u=flood$_&e=ep1" } 1 .. 1000);
is(locks(), 0, 'A: 1,000 new label sets in a full zone take no lock');

zero();
h2load('B flood', map { "/f/?u=fill1&e=new$_" } 1 .. 200);
is(locks(), 0, 'B: 200 new endpoints with the table and the zone full take no lock');

zero();
h2load('C priced', map { "/p/v1/chat/completions?u=c$_" } 1 .. 100);
is(locks(), 100, 'C: 100 new priced series take 100 locks (the currency comes with the series)');

zero();
h2load('existing', map { "/p/v1/chat/completions?u=c$_" } 1 .. 100);
is(locks(), 0, 'existing priced series take no lock');

# D: the label set (chat_completions, deepseek-flash) found the zone full
h2load('fill-tiny', '/t/v1/models', '/t/v1/chat/completions');
zero();
h2load('D overflow', ('/t/v1/chat/completions') x 1000);
my $dump = locks(qr/^ngx_http_dsm_series_get\b/);
is($dump, 0, 'D: 1,000 requests of a remembered overflow series: no series lookup');
zero();
h2load('D overflow locks', ('/t/v1/chat/completions') x 100);
is(locks(), 0, 'D: and no lock');

my $mt = $t->scrape(path => '/metrics-tiny', port => $port);
is($mt->value('deepseek_requests_total', { endpoint => '__overflow__' }), 1101, 'tiny zone: 1,101 in the overflow series');
is($mt->value('deepseek_metrics_dropped_total'), 1101, 'tiny zone: dropped_total counts each');
is($mt->value('deepseek_tokens_total', { endpoint => '__overflow__', type => 'output' }), 1101 * 30,
   'tiny zone: the overflow series has their tokens');

my $mf = $t->scrape(path => '/metrics-full', port => $port);
is($mf->value('deepseek_requests_total'), 40 + 1000 + 200, 'full zone: every request counted');
is($mf->value('deepseek_metrics_series', { state => 'used' }), 30, 'full zone: 30 series');
is($mf->value('deepseek_requests_total', { endpoint => '__overflow__' }), 10 + 1000 + 200,
   'full zone: the flood is in the overflow series');
is($mf->value('deepseek_metrics_dropped_total'), 10 + 1000 + 200, 'full zone: dropped_total exact');

my $mp = $t->scrape(path => '/metrics-priced', port => $port);
is($mp->value('deepseek_metrics_series', { state => 'used' }), 115, 'priced zone: 115 series');
is($mp->value('deepseek_requests_total'), 215, 'priced zone: 215 requests');
is($mp->value('deepseek_tokens_total', { type => 'output' }), 215 * 30, 'priced zone: output tokens exact');
# 8 x 0.006 + 12 x 0.30 + 30 x 1.20 = 39.648 USD per 1M requests (sum of 115 floats)
is(sprintf('%.9f', $mp->value('deepseek_cost_total')), '0.008524320',
   'priced zone: every series accrued its cost (215 x 0.000039648)');
is($mp->count('deepseek_cost_total', { currency => 'USD' }), 115, 'priced zone: a cost series each, in USD');

kill 'QUIT', $cg;
$deadline = time + 60;
my $st;
while (time < $deadline) {
    if (waitpid($cg, WNOHANG) == $cg) { $st = $?; last }
    sleep 0.1;
}
if (!defined $st) { kill 'KILL', $cg; waitpid($cg, 0) }
is($st, 0, 'nginx under callgrind exited cleanly');

$t->stop;
done_testing;
