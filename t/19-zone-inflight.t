#!/usr/bin/perl
# The in-flight gauge never leaks, however many workers are alive: every
# process gets its own slot (a master has at most NGX_MAX_PROCESSES children),
# so a worker killed with SIGKILL is reaped exactly.
#  1. worker_processes 1 and a long stream opened in each of 14 generations
#     (13 reloads; the old layout had 4 x 1 + 8 = 12 slots and a shared,
#     never reaped fallback): the gauge is exact at every step, SIGKILL of the
#     13th generation's worker takes exactly its stream off, and the gauge
#     returns to exactly 0 when the streams end.
#  2. worker_processes grown from 1 to 16 across a reload that keeps the zone:
#     24 streams in flight, every worker killed, the gauge returns to 0.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(WNOHANG);
use DSM::Test;

my $t = DSM::Test->new(workers => 1);
$t->allow(qr/\[alert\].*exited on signal 9/,
          qr/\[alert\].*shared memory zone .* was locked by \d+/);
$t->mock_start;

my $CONF = <<'EOF';
worker_processes %%N%%;
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:2m;

    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics deepseek;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
            proxy_buffering off;
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export deepseek; }
    }
}
EOF

sub conf { my ($n) = @_; (my $c = $CONF) =~ s/%%N%%/$n/; $t->write_conf($c) }

# ------------------------------------------------------------------ helpers

my (@kids, %exit);

sub spawn {
    my ($code) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP ALRM);
        $SIG{PIPE} = 'IGNORE';
        DSM::Test::_pdeathsig();
        my $rc = eval { $code->() } // 99;
        POSIX::_exit($rc);
    }
    push @kids, $pid;
    return $pid;
}

sub wait_kids {
    my ($pids, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        for my $pid (@$pids) {
            next if exists $exit{$pid};
            $exit{$pid} = $? >> 8 if waitpid($pid, WNOHANG) == $pid;
        }
        return 1 unless grep { !exists $exit{$_} } @$pids;
        sleep 0.05;
    }
    for my $pid (grep { !exists $exit{$_} } @$pids) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
        $exit{$pid} = -1;
    }
    return 0;
}

# a stream that lasts until $until (epoch seconds): 0 complete, 2 cut
sub stream_until {
    my ($until) = @_;
    my $ms = int(($until - time) * 1000);
    return spawn(sub {
        my $r = $t->chat(stream => 1, mock => "keepalive_ms=$ms;keepalive_every_ms=500",
                         timeout => $ms / 1000 + 20);
        return 0 if $r->{status} == 200 && $r->{chunked_complete} && $r->{body} =~ /data: \[DONE\]/;
        return 2;
    });
}

sub inflight { my ($m) = @_; return $m->value('deepseek_requests_in_flight') }

# scrapes until the gauge is $want; fails with the last value after 5 s
sub inflight_is {
    my ($want, $name) = @_;
    my ($m, $v);
    my $deadline = time + 5;
    while (1) {
        $m = $t->scrape;
        $v = inflight($m);
        last if $v == $want;
        if (time > $deadline) {
            diag("$name: in-flight still $v after 5 s, expected $want");
            last;
        }
        sleep 0.05;
    }
    is($v, $want, $name);
    return $m;
}

# ------------------------------------------------------------------ 1. 14 generations

conf(1);
$t->start;

my $G = 14;
my $until = time + 30;
my (@gen_pid, @streams);

for my $g (1 .. $G) {
    my @w = $t->worker_pids;
    is(scalar(@w), 1, "generation $g: one current worker");
    $gen_pid[$g] = $w[0];
    push @streams, stream_until($until);
    inflight_is($g, "generation $g: in-flight == $g");
    if ($g < $G) {
        ok($t->reload, "reload $g: a new worker took over");
    }
}

my @alive = $t->all_worker_pids;
is(scalar(@alive), $G, "$G workers alive (13 shutting down, each holding its stream)");

my $m = $t->scrape;
is($m->value('deepseek_metrics_reloads_total'), $G - 1, 'every reload kept the zone');
is($m->value('deepseek_requests_total'), 0, 'no stream finished yet');

my $victim = $gen_pid[13];
ok(kill('KILL', $victim), "SIGKILL the 13th generation's worker $victim");
my $deadline = time + 5;
sleep 0.05 while kill(0, $victim) && time < $deadline;
inflight_is($G - 1, 'its stream is reaped: in-flight == ' . ($G - 1));

ok(wait_kids(\@streams, $until - time + 20), 'the streams ended');
is(scalar(grep { $exit{$_} == 0 } @streams), $G - 1, ($G - 1) . ' streams completed');
is(scalar(grep { $exit{$_} == 2 } @streams), 1, 'the killed worker\'s stream was cut');

$m = inflight_is(0, 'in-flight back to exactly 0 once the streams ended');
$m = $t->scrape_settled;
is($m->value('deepseek_requests_total'), $G - 1, 'the completed streams are counted once each');
is_deeply([ map { "$_->{labels}{endpoint}=$_->{value}" } grep { $_->{value} }
            $m->samples('deepseek_requests_in_flight') ], [], 'no endpoint left in flight');

# ------------------------------------------------------------------ 2. worker_processes grows

my $start_time = $m->value('deepseek_metrics_zone_start_time_seconds');
conf(16);
ok($t->reload, 'reload to worker_processes 16');
$m = $t->scrape;
is($m->value('deepseek_metrics_zone_start_time_seconds'), $start_time, 'the zone was kept');
is($m->value('deepseek_metrics_reloads_total'), $G, 'counted as a reload');

my @workers = $t->worker_pids;
is(scalar(@workers), 16, '16 workers');

my $S = 24;
$until = time + 15;
my @s2 = map { stream_until($until) } 1 .. $S;
inflight_is($S, "$S streams in flight on 16 workers");

my $n_killed = grep { kill 'KILL', $_ } @workers;
is($n_killed, 16, 'SIGKILL every worker');
$deadline = time + 10;
my @new;
while (time < $deadline) {
    @new = $t->worker_pids;
    last if @new == 16 && !grep { my $p = $_; grep { $_ == $p } @workers } @new;
    sleep 0.05;
}
is(scalar(@new), 16, 'the master started 16 new workers');
inflight_is(0, 'every killed worker\'s streams are reaped: in-flight == 0');
ok(wait_kids(\@s2, $until - time + 20), 'the stream clients ended');
is(scalar(grep { $exit{$_} == 2 } @s2), $S, 'all their streams were cut');

$m = $t->scrape_settled;
is($m->value('deepseek_requests_in_flight'), 0, 'in-flight still 0');
is($m->value('deepseek_requests_total'), $G - 1, 'no cut stream was counted');

$t->stop;
done_testing;
