#!/usr/bin/perl
# A worker killed with SIGKILL during load: nginx keeps serving and exporting,
# requests after the kill are counted exactly, no lock is left held (scrapes and
# requests do not hang), the in-flight gauge is exact while long streams run and
# returns to 0 once traffic stops (the killed worker's slot is reaped).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(WNOHANG);
use DSM::Test;

my $have_h2load = grep { -x "$_/h2load" } split /:/, $ENV{PATH};
plan skip_all => 'h2load not found' unless $have_h2load;

my $t = DSM::Test->new(workers => 2);
# expected: the master reports each killed worker; nginx's own recovery of a
# shared memory mutex held by the dead worker is allowed too (it is an [alert])
$t->allow(qr/\[alert\].*exited on signal 9/, qr/\[alert\].*shared memory zone .* was locked by \d+/);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:10m;
    deepseek_metrics_zone churn:4m;

    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics deepseek;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
        # every request a new label set: a new series is created under the zone mutex
        location /churn/ {
            deepseek_metrics churn;
            deepseek_metrics_label u $arg_u;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_set_header Accept-Encoding "";
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export deepseek; }
        location = /metrics-churn { deepseek_metrics_export churn; }
    }
}
EOF
$t->start;
my $port = $t->port('PORT');

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

sub spawn_cmd {
    my ($outf, @cmd) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        DSM::Test::_pdeathsig();
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $outf or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    push @kids, $pid;
    return $pid;
}

sub reap {
    for my $pid (@kids) {
        next if exists $exit{$pid};
        $exit{$pid} = $? if waitpid($pid, WNOHANG) == $pid;
    }
    return scalar grep { !exists $exit{$_} } @kids;
}

sub wait_kids {
    my ($pids, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        reap();
        return 1 unless grep { !exists $exit{$_} } @$pids;
        sleep 0.05;
    }
    for my $pid (grep { !exists $exit{$_} } @$pids) { kill 'KILL', $pid; waitpid($pid, 0); $exit{$pid} = -1 }
    return 0;
}

# a scrape that must not hang: returns (metrics or undef, elapsed)
# (elapsed: the HTTP exchange only, not the Perl parsing of a large exposition)
sub quick_scrape {
    my $t0 = time;
    my $m = eval { $t->scrape(accept => 'text') };
    diag("scrape failed: $@") unless $m;
    return ($m, $m ? $m->response->{elapsed} : time - $t0);
}

sub inflight {
    my ($m, $ep) = @_;
    return $m->value('deepseek_requests_in_flight', { endpoint => $ep });
}

# established client connections on nginx's port, per worker PID (/proc)
sub conns_per_worker {
    my %inode;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        <$fh>;
        while (<$fh>) {
            my @c = split ' ';
            my ($lport) = $c[1] =~ /:([0-9A-F]{4})$/;
            next unless defined $lport && hex($lport) == $port && $c[3] eq '01';
            $inode{ $c[9] } = 1;
        }
    }
    my %n;
    for my $pid ($t->worker_pids) {
        $n{$pid} = 0;
        opendir my $d, "/proc/$pid/fd" or next;
        for my $fd (readdir $d) {
            my $l = readlink "/proc/$pid/fd/$fd" // next;
            $n{$pid}++ if $l =~ /^socket:\[(\d+)\]$/ && $inode{$1};
        }
    }
    return \%n;
}

sub h2load_ok {
    my ($outf, $n) = @_;
    my $o = do { local $/; open my $f, '<', $outf or return (0, ''); <$f> };
    my ($done, $succ) = $o =~ /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded/;
    my ($c2) = $o =~ /status codes: (\d+) 2xx/;
    return (($done // -1) == $n && ($c2 // -1) == $n ? 1 : 0, $o);
}

my $sel = { endpoint => 'chat_completions', model => 'deepseek-flash', status => '200' };
my $chat_body = $t->write_file('chat.json',
    '{"model":"deepseek-flash","stream":false,"messages":[{"role":"user","content":"Hi"}]}');

# ------------------------------------------------------------------ phase 1: long streams in flight

my $K = 8;
my @long;
for my $i (1 .. $K) {
    push @long, spawn(sub {
        my $r = $t->chat(stream => 1, mock => 'keepalive_ms=5000;keepalive_every_ms=500', timeout => 15);
        # 0: a complete stream; 2: cut (its worker was killed); anything else: failure
        return 0 if $r->{status} == 200 && $r->{chunked_complete} && $r->{body} =~ /data: \[DONE\]/;
        return 2 if $r->{status} == 200 || $r->{raw} eq '';
        return 1;
    });
}

my ($m, $el);
my $deadline = time + 5;
my $seen = 0;
while (time < $deadline) {
    ($m) = quick_scrape();
    $seen = $m ? inflight($m, 'chat_completions') : -1;
    last if $seen >= $K;
    sleep 0.05;
}
is($seen, $K, "in-flight{chat_completions} == $K while $K long streams run");
is($m ? $m->value('deepseek_requests_in_flight') : -1, $K, "in-flight over all endpoints == $K");
is($m ? $m->value('deepseek_requests_total') : -1, 0, 'nothing counted yet (streams not finished)');

# the worker holding the most of them is killed
my $conns = conns_per_worker();
my ($victim) = sort { $conns->{$b} <=> $conns->{$a} || $a <=> $b } keys %$conns;
my $killed_n = $conns->{$victim} // 0;
my $survivors = $K - $killed_n;
note("connections per worker: " . join(', ', map { "$_=$conns->{$_}" } sort keys %$conns));
cmp_ok($killed_n, '>', 0, "the victim worker $victim holds $killed_n of the streams");
my %old = map { $_ => 1 } $t->worker_pids;
my $log_off = $t->log_offset;
ok(kill('KILL', $victim), "SIGKILL worker $victim");

# the master replaces it
my @new;
$deadline = time + 10;
while (time < $deadline) {
    @new = $t->worker_pids;
    last if @new == 2 && !grep { $_ == $victim } @new;
    sleep 0.05;
}
is(scalar(grep { !$old{$_} } @new), 1, 'the master started one new worker');
ok(!kill(0, $victim), 'the killed worker is gone');

# the next scrapes reap the dead worker's slot: only the survivors are in flight
$deadline = time + 3;
my $max_el = 0;
while (time < $deadline) {
    ($m, $el) = quick_scrape();
    $max_el = $el if $el > $max_el;
    $seen = $m ? inflight($m, 'chat_completions') : -1;
    last if $seen == $survivors;
    sleep 0.05;
}
is($seen, $survivors, "after the kill: in-flight == $survivors (the dead worker's $killed_n reaped)");
cmp_ok($max_el, '<', 2, 'scrapes after the kill answer at once (no lock held)');

# requests after the kill succeed and are counted exactly
my $before = $m ? $m->value('deepseek_requests_total', $sel) : -1;
my $N1 = 300;
my $h1 = spawn_cmd($t->prefix . '/h2load-1.out', 'h2load', '--h1', '-n', $N1, '-c', 10,
                   '-H', 'Content-Type: application/json', '-d', $chat_body,
                   "http://127.0.0.1:$port/v1/chat/completions");
ok(wait_kids([$h1], 30), 'h2load after the kill finished');
my ($ok1, $o1) = h2load_ok($t->prefix . '/h2load-1.out', $N1);
ok($ok1, "$N1 requests after the kill: all 200") or diag $o1;

# the survivors' streams end normally and are counted; the killed ones are not
ok(wait_kids(\@long, 20), 'the long-stream clients finished');
my %rc;
$rc{ $exit{$_} >> 8 }++ for @long;
is($rc{0} // 0, $survivors, "$survivors streams completed");
is($rc{2} // 0, $killed_n, "$killed_n streams were cut by the kill");
is($rc{1} // 0, 0, 'no other outcome');

$deadline = time + 5;
while (time < $deadline) {
    ($m) = quick_scrape();
    last if $m && $m->value('deepseek_requests_total', $sel) >= $before + $N1 + $survivors;
    sleep 0.1;
}
is($m->value('deepseek_requests_total', $sel), $before + $N1 + $survivors,
   "counted exactly: $N1 new requests + $survivors finished streams");
is($m->value('deepseek_requests_total'), $N1 + $survivors, 'nothing else was counted');

$deadline = time + 5;
while (time < $deadline) {
    ($m) = quick_scrape();
    last if $m && $m->value('deepseek_requests_in_flight') == 0;
    sleep 0.1;
}
is($m->value('deepseek_requests_in_flight'), 0, 'in-flight back to 0 on every endpoint once traffic stopped');

like($t->log_since($log_off), qr/\[alert\].*worker process $victim exited on signal 9/,
     'the master logged the killed worker');

# ------------------------------------------------------------------ phase 2: kills during bulk load

# clients that reconnect after every request, so the load goes on across the kills
my $load_until = time + 2.2;
my @loaders;
my $before2 = $m->value('deepseek_requests_total');
for my $i (1 .. 4) {
    my $f = $t->prefix . "/loader-$i.out";
    push @loaders, [ $f, spawn(sub {
        my ($ok, $att) = (0, 0);
        while (time < $load_until) {
            $att++;
            my $r = eval { $t->chat(path => '/chat/completions', timeout => 5) };
            $ok++ if $r && $r->{status} == 200 && $r->{body} =~ /"usage"/;
        }
        open my $fh, '>', $f or return 1;
        print $fh "$ok $att\n";
        close $fh;
        return 0;
    }) ];
}
# long streams too, so the victims hold in-flight requests
my @long2 = map { spawn(sub {
    my $r = $t->chat(stream => 1, mock => 'keepalive_ms=3000;keepalive_every_ms=500', timeout => 15);
    return ($r->{status} == 200 && $r->{chunked_complete} && $r->{body} =~ /data: \[DONE\]/) ? 0 : 2;
}) } 1 .. 4;
my @victims;
sleep 0.3;
for my $round (1 .. 3) {
    my @w = $t->worker_pids;
    last unless @w;
    my $v = $w[ $round % @w ];
    push @victims, $v if kill 'KILL', $v;
    my ($mm, $e) = quick_scrape();
    ok($mm, "scrape right after kill $round parses");
    cmp_ok($e, '<', 2, "scrape right after kill $round answers at once");
    sleep 0.5;
}
is(scalar(@victims), 3, 'three more workers killed under load');
ok(wait_kids([ (map { $_->[1] } @loaders), @long2 ], 40), 'the load ended');
my ($ok2, $att2) = (0, 0);
for my $l (@loaders) {
    my ($o, $a) = split ' ', do { local $/; open my $f, '<', $l->[0] or die "$l->[0]: $!"; <$f> } // '0 0';
    $ok2 += $o; $att2 += $a;
}
my $long2_ok = grep { $exit{$_} == 0 } @long2;
note("load across the kills: $ok2 of $att2 requests answered 200; $long2_ok of 4 long streams complete");
cmp_ok($ok2, '>', 100, 'the load went on across the kills');

# after the chaos: workers complete, exports and counts exact
$deadline = time + 10;
my @w;
while (time < $deadline) { @w = $t->worker_pids; last if @w == 2 && !grep { my $v = $_; grep { $_ == $v } @victims } @w; sleep 0.05 }
is(scalar(@w), 2, 'two workers running again');

$deadline = time + 3;
while (time < $deadline) {
    ($m, $el) = quick_scrape();
    last if $m && $m->value('deepseek_requests_total') - $before2 >= $ok2 - 3 * 4;
    sleep 0.1;
}
ok($m, 'scrape after the kills parses strictly');
my $counted2 = $m ? $m->value('deepseek_requests_total') - $before2 : -1;
note("counted across the kills: $counted2 (answered: " . ($ok2 + $long2_ok) . ")");
# a request answered but whose worker died before its log phase is lost (at most
# one per client connection per kill); nothing is ever counted twice
cmp_ok($counted2, '>=', $ok2 - 3 * 4, 'counted across the kills >= answered - kills x clients');
cmp_ok($counted2, '<=', $att2 + 4, 'counted across the kills <= attempted (+ the long streams)');
my $base2 = $m ? $m->value('deepseek_requests_total', $sel) : -1;
my $N3 = 500;
my $h3 = spawn_cmd($t->prefix . '/h2load-3.out', 'h2load', '--h1', '-n', $N3, '-c', 8,
                   '-H', 'Content-Type: application/json', '-d', $chat_body,
                   "http://127.0.0.1:$port/chat/completions");
ok(wait_kids([$h3], 30), 'h2load after the kills finished');
my ($ok3, $o3) = h2load_ok($t->prefix . '/h2load-3.out', $N3);
ok($ok3, "$N3 requests after the kills: all 200") or diag $o3;

$deadline = time + 5;
while (time < $deadline) {
    ($m) = quick_scrape();
    last if $m && $m->value('deepseek_requests_total', $sel) >= $base2 + $N3;
    sleep 0.1;
}
is($m->value('deepseek_requests_total', $sel), $base2 + $N3, "exactly $N3 more counted after the kills");

$deadline = time + 5;
my @nz;
while (time < $deadline) {
    ($m) = quick_scrape();
    @nz = map { "$_->{labels}{endpoint}=$_->{value}" } grep { $_->{value} } $m->samples('deepseek_requests_in_flight');
    last unless @nz;
    sleep 0.1;
}
is_deeply(\@nz, [], 'in-flight 0 for every endpoint after the kills (dead slots reaped)');

# ------------------------------------------------------------------ phase 3: kills while series are created
# (the zone mutex is taken for every new label set: the best chance to kill a holder;
# nginx's master then unlocks it and logs "was locked by"; nothing may hang)

my $churn_until = time + 2.5;
my @churn;
for my $i (1 .. 4) {
    my $f = $t->prefix . "/churn-$i.out";
    push @churn, [ $f, spawn(sub {
        my ($ok, $att) = (0, 0);
        while (time < $churn_until) {
            $att++;
            my $r = eval { $t->http(GET => "/churn/v1/models?u=c$i-$att", timeout => 5) };
            $ok++ if $r && $r->{status} == 200;
            sleep 0.01;
        }
        open my $fh, '>', $f or return 1;
        print $fh "$ok $att\n";
        close $fh;
        return 0;
    }) ];
}
my $hung = 0;
sleep 0.2;
for my $round (1 .. 6) {
    my @w = $t->worker_pids;
    my $v = $w[ $round % (@w || 1) ] or last;
    push @victims, $v if kill 'KILL', $v;
    for my $path ('/metrics', '/metrics-churn') {
        my $r = $t->http(GET => $path, port => $t->port('METRICS_PORT'), timeout => 10);
        if ($r->{status} != 200 || $r->{elapsed} >= 2) {
            $hung++;
            diag(sprintf 'churn kill %d: %s status %d in %.2f s', $round, $path, $r->{status}, $r->{elapsed});
        }
    }
    sleep 0.3;
}
is($hung, 0, 'label churn: every scrape right after a kill answered at once');
ok(wait_kids([ map { $_->[1] } @churn ], 40), 'label churn clients ended');
my ($cok, $catt) = (0, 0);
for my $l (@churn) {
    my ($o, $a) = split ' ', do { local $/; open my $f, '<', $l->[0] or die "$l->[0]: $!"; <$f> } // '0 0';
    $cok += $o; $catt += $a;
}
note("label churn across 6 kills: $cok of $catt requests answered 200");
cmp_ok($cok, '>', 100, 'label churn went on across the kills');

$deadline = time + 10;
while (time < $deadline) { @w = $t->worker_pids; last if @w == 2 && !grep { my $v = $_; grep { $_ == $v } @victims } @w; sleep 0.05 }
is(scalar(@w), 2, 'two workers running again after the churn kills');

# new label sets still get series (the mutex is free) and are counted exactly
my $mc = $t->scrape(path => '/metrics-churn');
my $used0 = $mc->value('deepseek_metrics_series', { state => 'used' });
note("churn zone: $used0 series used");
my $bad = 0;
for my $i (1 .. 20) {
    my $t0 = time;
    my $r = $t->http(GET => "/churn/v1/models?u=after-$i", timeout => 5);
    $bad++ unless $r->{status} == 200 && time - $t0 < 2;
}
is($bad, 0, '20 requests with new label sets after the kills: 200, no hang');
sleep 0.3;
$mc = $t->scrape(path => '/metrics-churn');
is($mc->value('deepseek_requests_total', { endpoint => 'models', u => qr/^after-/ }), 20, 'each counted once in its own series');
is($mc->count('deepseek_requests_total', { u => qr/^after-/ }), 20, '... 20 series');
is($mc->value('deepseek_metrics_series', { state => 'used' }), $used0 + 20, 'series used grew by exactly 20');
is($mc->value('deepseek_requests_total'), $mc->value('deepseek_request_latency_seconds_count'),
   'churn zone: requests_total == latency _count');
cmp_ok($mc->value('deepseek_requests_total'), '<=', $catt + 20, 'churn zone: counted <= attempted');
cmp_ok($mc->value('deepseek_requests_total'), '>=', $cok + 20 - 6 * 4, 'churn zone: counted >= answered - kills x clients');
is($mc->value('deepseek_requests_in_flight'), 0, 'churn zone: in-flight 0 after the churn kills');
($m) = quick_scrape();
is($m->value('deepseek_requests_in_flight'), 0, 'main zone: in-flight 0 after the churn kills');

my $lt = $t->log_since($log_off);
for my $v (@victims) {
    like($lt, qr/worker process $v exited on signal 9/, "master logged killed worker $v");
}
my @locked = $t->read_log('error.log') =~ /(shared memory zone .* was locked by \d+)/g;
note("nginx force-unlocked a zone mutex: @locked") if @locked;

my ($pc, $pout) = $t->promtool_check($m->raw);
is($pc, 0, 'promtool check metrics after the kills') or diag $pout;

$t->stop;
done_testing;
