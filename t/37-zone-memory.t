#!/usr/bin/perl
# Issue 10, memory on demand: the zone commits its series records in chunks
# (512 records, 452 KB with the default histograms) as label sets appear.
#  - a 64m zone is resident below 2 MB before any traffic (it was ~56 MB when
#    the whole record array was zeroed at start): the slab's page descriptors
#    (~380 KB), the hash heads (256 KB), the in-flight slots (272 KB), the
#    header and the first chunk;
#  - 1,500 label sets (indexes 1..1500: chunks 0, 1 and 2, across the records
#    511/512 and 1023/1024) commit at least the two new chunks, not the zone;
#  - each label set keeps its own exact counts: label set i had one request
#    with i output tokens, so a record shared by two label sets shows a sum;
#  - over a reload the zone, its series and their counts are kept, and the
#    new workers create series in a new chunk (1536..) and count exactly;
#  - a chunk that no longer fits (long label values took the memory) sends
#    new label sets to the overflow series, exact totals and no crash.
#
# Resident = pages of the zone's shared mapping in memory, whoever touched
# them: fincore(1) on /proc/MASTER/map_files/<range> (root); else the sum
# of Pss over the master and its workers (the master, in the foreground,
# is the process that initialised the zone).  bench/zone-memory.sh prints
# the same figures.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;

my $ZONE_KB = 65536;
my $N = 1500;

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone mem:64m;
    deepseek_metrics_zone small:1m;

    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics mem;
        deepseek_metrics_label k $arg_k;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        deepseek_metrics small;
        deepseek_metrics_label k $arg_k;
        location / {
            default_type application/json;
            return 200 '{"id":"x","object":"chat.completion","model":"deepseek-chat","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}';
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export mem; }
        location = /small { deepseek_metrics_export small; }
    }
}
EOF
$t->allow(qr/deepseek_metrics_zone "small" is full/);
$t->start;

# the zone's mapping in the master: "/dev/zero (deleted)" of the zone's size
sub zone_range {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/smaps" or return;
    my $range;
    while (<$f>) {
        if (/^([0-9a-f]+-[0-9a-f]+) /) {
            my $r = $1;
            $range = m{/dev/zero \(deleted\)$} ? $r : undef;
        } elsif ($range && /^Size:\s+(\d+) kB/ && $1 == $ZONE_KB) {
            return $range;
        }
    }
    return;
}

my $range = zone_range($t->master_pid);
ok($range, "the 64m zone's mapping in the master ($range)") or BAIL_OUT('no zone mapping');
my $how = (-x '/usr/bin/fincore' && -r "/proc/" . $t->master_pid . "/map_files/$range")
    ? 'fincore' : 'sum of Pss';

sub resident_kb {
    if ($how eq 'fincore') {
        my $m = $t->master_pid;
        my $out = `fincore -b -n -o RES /proc/$m/map_files/$range`;
        return $out =~ /^\s*(\d+)\s*$/ ? int($1 / 1024) : undef;
    }
    my $kb = 0;
    for my $pid ($t->master_pid, $t->all_worker_pids) {
        open my $f, '<', "/proc/$pid/smaps" or next;
        my $in = 0;
        while (<$f>) {
            if (/^([0-9a-f]+-[0-9a-f]+) /) { $in = $1 eq $range }
            elsif ($in && /^Pss:\s+(\d+) kB/) { $kb += $1 }
        }
    }
    return $kb;
}

my $before = resident_kb();
note("resident ($how): $before kB before traffic");
cmp_ok($before, '<', 2048, "64m zone before any traffic: resident $before kB < 2 MB");

# label set i: one request with i output tokens
sub fill {
    my ($from, $to) = @_;
    my $bad = 0;
    for my $i ($from .. $to) {
        my $r = $t->chat(path => "/chat/completions?k=$i", mock => "completion=$i");
        $bad++ unless $r->{status} == 200;
    }
    is($bad, 0, "label sets $from..$to: every request answered 200");
}

# every label set 1..n with its exact counts
sub check {
    my ($m, $n, $what) = @_;
    my ($wrong, $first, %req, %out) = (0, '');
    # one pass over each family: value() per label set would be quadratic
    for ($m->samples('deepseek_requests_total')) {
        $req{ $_->{labels}{k} } += $_->{value} if defined $_->{labels}{k};
    }
    for ($m->samples('deepseek_tokens_total', { type => 'output' })) {
        $out{ $_->{labels}{k} } += $_->{value} if defined $_->{labels}{k};
    }
    for my $i (1 .. $n) {
        my $req = $req{$i} // -1;
        my $out = $out{$i} // -1;
        next if $req == 1 && $out == $i;
        $first ||= "k=$i: requests $req, output tokens $out";
        $wrong++;
    }
    is($wrong, 0, "$what: each of the $n label sets has 1 request and its own output tokens")
        or diag("first wrong: $first");
    is(scalar(keys %req), $n, "$what: $n label sets shown");
    is($m->value('deepseek_metrics_series', { zone => 'mem', state => 'used' }), $n, "$what: $n series used");
    is($m->value('deepseek_metrics_dropped_total', { zone => 'mem' }), 0, "$what: none dropped");
}

fill(1, $N);
my $m = $t->scrape_settled;
check($m, $N, "$N label sets");

my $after = resident_kb();
note("resident ($how): $after kB after $N label sets (+" . ($after - $before) . ' kB)');
# chunks 1 and 2 (512 records of 904 B each) are zeroed when their first series comes
cmp_ok($after - $before, '>=', 2 * 452, "$N label sets commit the two new chunks (+" . ($after - $before) . ' kB)');
cmp_ok($after, '<', 8192, "$N label sets: resident $after kB, not the whole zone");

# a reload keeps the zone and its series; the new workers add a chunk
my $start = $m->value('deepseek_metrics_zone_start_time_seconds', { zone => 'mem' });
ok($t->reload, 'reload with the same configuration');
$m = $t->scrape_settled;
check($m, $N, 'after the reload');
is($m->value('deepseek_metrics_reloads_total', { zone => 'mem' }), 1, 'the zone was reused');
is($m->value('deepseek_metrics_zone_start_time_seconds', { zone => 'mem' }), $start, 'zone start time kept');

fill($N + 1, 1600);
$m = $t->scrape_settled;
check($m, 1600, 'new label sets after the reload (a new chunk from 1536)');

# the small zone: 700 label sets fit by size; 100 B values make 256 B keys,
# which leave no room for the second chunk (records 512..700): label sets
# from the 512th go to the overflow series, and every request is counted
my $SMALL = 600;
my $long = 'v' x 100;
my $bad = 0;
for my $i (1 .. $SMALL) {
    my $r = $t->http(GET => "/chat/completions?k=$i$long", port => $t->port('PORT2'));
    $bad++ unless $r->{status} == 200;
}
is($bad, 0, "small zone: $SMALL requests answered 200");
my $s = $t->scrape_settled(path => '/small');
is($s->value('deepseek_metrics_series', { zone => 'small', state => 'capacity' }), 700, 'small zone: capacity 700');
is($s->value('deepseek_metrics_series', { zone => 'small', state => 'used' }), 511,
   'small zone: the first chunk filled (511 label sets and the overflow series), the second did not fit');
is($s->value('deepseek_metrics_dropped_total', { zone => 'small' }), $SMALL - 511, 'small zone: the rest dropped');
is($s->value('deepseek_requests_total', { endpoint => '__overflow__', status => '200' }), $SMALL - 511,
   'small zone: counted in the overflow series');
is($s->value('deepseek_requests_total', { k => "1$long", status => '200' }), 1, 'small zone: label set 1 counted');
is($s->value('deepseek_requests_total', { k => "511$long", status => '200' }), 1, 'small zone: label set 511 counted');
like($t->read_log('error.log'), qr/deepseek_metrics_zone "small" is full \(511 series\)/, 'small zone: full, logged once');

$t->stop;
done_testing;
