#!/usr/bin/perl
# Binary upgrade (USR2) as nginx documents it, with the same binary: what a
# scraper sees. Between USR2 and WINCH two masters serve the port, each with
# its own zone, so scrapes alternate between the old zone's counts and the new
# zone's; deepseek_metrics_master_pid and deepseek_metrics_zone_start_time_seconds
# tell the two apart exactly. After WINCH only the new zone is scraped.
#
# nginx honours WINCH only when daemonized, so this test runs its own daemon
# (not DSM::Test's foreground master) and stops every master by PID.
#
# Module code (dynamic builds): the module is loaded from a copy; a new .so
# moved over it (a new file, as an upgrade installs it) is NOT loaded by a
# reload (the master still has the old one mapped under that path), and IS
# loaded by the binary upgrade. The new .so differs in one HELP text.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::IP;
use DSM::Test;
use DSM::Metrics;

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
my $P = $t->prefix;

my $HELP_OLD = 'Module and nginx versions.';
my $HELP_NEW = 'Module and nginx VERSIONS.';
my ($SO, $SO_NEW);
if (!$t->is_static) {
    $SO = "$P/modules/m.so";
    mkdir "$P/modules";
    chmod 0755, "$P/modules";
    open my $in, '<:raw', $t->module or die "read module: $!";
    my $bin = do { local $/; <$in> };
    close $in;
    $t->write_file('modules/m.so', $bin);
    $bin =~ s/\Q$HELP_OLD\E/$HELP_NEW/g or die "HELP text not found in the module";
    $SO_NEW = $t->write_file('modules/m.so.new', $bin);
}
my $LOAD = $SO ? "load_module $SO;" : '';

$t->write_conf("$LOAD\n" . <<'EOF');
daemon on;
worker_processes 2;
pid %%PREFIX%%/logs/nginx.pid;
error_log %%PREFIX%%/logs/error.log info;
# the new binary gets only these from the old master's environment
env ASAN_OPTIONS;
env UBSAN_OPTIONS;
env LSAN_OPTIONS;
http {
    deepseek_metrics_zone z:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics z;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        keepalive_requests 1000;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t') or diag $out;
my $MPORT = $t->port('METRICS_PORT');

# ------------------------------------------------------------------ processes

my %masters;    # every master this test started or caused, stopped by PID at the end

sub alive { my ($pid) = @_; return $pid && kill(0, $pid) && !zombie($pid) }
sub zombie {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/stat" or return 1;
    my $st = <$f>; close $f;
    return $st =~ /\)\s+Z\s/ ? 1 : 0;
}
sub read_pid {
    my ($file) = @_;
    open my $f, '<', $file or return 0;
    my $pid = <$f>; close $f;
    return ($pid // '') =~ /^(\d+)/ ? $1 : 0;
}
sub workers_of {
    my ($pid) = @_;
    return grep { $_->[1] =~ /worker process/ } DSM::Test::_proc_children($pid);
}
sub wait_until {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) { return 1 if $cond->(); sleep 0.05 }
    return $cond->() ? 1 : 0;
}
sub stop_master {
    my ($pid) = @_;
    return 1 unless alive($pid);
    kill 'QUIT', $pid;
    return 1 if wait_until(20, sub { !alive($pid) });
    kill 'TERM', $pid;
    return 1 if wait_until(5, sub { !alive($pid) });
    kill 'KILL', $_->[0] for workers_of($pid);
    kill 'KILL', $pid;
    wait_until(5, sub { !alive($pid) });
    return 0;
}
sub cleanup { stop_master($_) for sort keys %masters; %masters = () }
END { cleanup() }
{
    my $old_alrm = $SIG{ALRM};
    $SIG{ALRM} = sub { cleanup(); $old_alrm->() if ref $old_alrm };
}

# ------------------------------------------------------------------ scrapes

# a scrape on a kept-alive connection (the worker that accepted it serves it)
sub ka_scrape {
    my ($sock) = @_;
    print $sock "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n" or return undef;
    my ($head, $buf) = ('', '');
    while ($head !~ /\r\n\r\n/) {
        my $n = sysread($sock, $buf, 65536) or return undef;
        $head .= $buf;
    }
    my ($h, $body) = split /\r\n\r\n/, $head, 2;
    my ($len) = $h =~ /^Content-Length:\s*(\d+)/mi;
    return undef unless defined $len && $h =~ m{^HTTP/1\.1 200 };
    while (length $body < $len) {
        my $n = sysread($sock, $buf, 65536) or return undef;
        $body .= $buf;
    }
    return DSM::Metrics->parse($body, 'text/plain; version=0.0.4');
}

sub fresh_scrape {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $MPORT, Proto => 'tcp', Timeout => 5)
        or return undef;
    my $m = ka_scrape($s);
    close $s;
    return $m;
}

# what a scraper can tell from one scrape: master, zone start, requests counted
# (and, dynamic builds, which module code served it)
sub state {
    my ($m) = @_;
    return 'no scrape' unless $m;
    my $code = '';
    if ($SO) {
        my $h = $m->help('deepseek_build_info') // '';
        $code = $h eq $HELP_OLD ? ' code=old' : $h eq $HELP_NEW ? ' code=new' : " code=?$h";
    }
    return join(' ', 'pid=' . $m->value('deepseek_metrics_master_pid', { zone => 'z' }),
                     'start=' . $m->value('deepseek_metrics_zone_start_time_seconds', { zone => 'z' }),
                     'requests=' . $m->value('deepseek_requests_total')) . $code;
}
my $OLD_CODE = $SO ? ' code=old' : '';
my $NEW_CODE = $SO ? ' code=new' : '';

sub chats {
    my ($n) = @_;
    my $ok = 0;
    for (1 .. $n) { $ok++ if $t->chat(model => 'deepseek-flash')->{status} == 200 }
    return $ok;
}

# ------------------------------------------------------------------ the old master

$t->_release_ports;
system($t->nginx, '-p', "$P/", '-c', 'conf/nginx.conf') == 0 or BAIL_OUT('nginx did not start');
ok(wait_until(15, sub { read_pid("$P/logs/nginx.pid") }), 'old master wrote its pid file');
my $old = read_pid("$P/logs/nginx.pid");
$masters{$old} = 1;
ok(wait_until(15, sub { workers_of($old) == 2 }), 'old master: 2 workers');

is(chats(5), 5, '5 requests before the upgrade');
my $m = fresh_scrape();
ok(wait_until(5, sub { $m = fresh_scrape(); $m && $m->value('deepseek_requests_in_flight') == 0 }),
   'old zone settled');
my $s_old = $m->value('deepseek_metrics_zone_start_time_seconds', { zone => 'z' });
my $OLD = "pid=$old start=$s_old requests=5$OLD_CODE";
is(state($m), $OLD, 'before USR2: the old master and its zone');

SKIP: {
    skip 'static build: no .so to replace', 3 unless $SO;
    rename $SO_NEW, $SO or die "rename: $!";
    my %w = map { $_->[0] => 1 } workers_of($old);
    kill 'HUP', $old;
    ok(wait_until(30, sub { my @n = workers_of($old); @n == 2 && !grep { $w{$_->[0]} } @n }),
       'a new .so moved in place, then a reload: new workers');
    my $x;
    wait_until(10, sub { $x = fresh_scrape(); $x && $x->value('deepseek_metrics_reloads_total', { zone => 'z' }) == 1 });
    is($x && $x->value('deepseek_metrics_reloads_total', { zone => 'z' }), 1, 'the reload kept the zone');
    is(state($x), $OLD, 'after the reload: still the OLD module code (and the same zone)');
}

# a connection kept alive to an old worker
my $ka = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $MPORT, Proto => 'tcp', Timeout => 5);
is(state(ka_scrape($ka)), $OLD, 'kept-alive connection: the old zone');

sleep 1.1;    # the new zone starts in a later second

# ------------------------------------------------------------------ USR2

kill 'USR2', $old;
ok(wait_until(30, sub { read_pid("$P/logs/nginx.pid.oldbin") == $old && read_pid("$P/logs/nginx.pid") != $old
                        && read_pid("$P/logs/nginx.pid") }),
   'USR2: the old pid file is nginx.pid.oldbin, nginx.pid names a new master');
my $new = read_pid("$P/logs/nginx.pid");
$masters{$new} = 1 if $new;
ok($new && $new != $old, "new master $new (old $old)");
ok(wait_until(30, sub { workers_of($new) == 2 }), 'new master: 2 workers');
is(scalar(workers_of($old)), 2, 'old master keeps its 2 workers until WINCH');
{
    my $exe_old = readlink("/proc/$old/exe") // '';
    my $exe_new = readlink("/proc/$new/exe") // '';
    is($exe_new, $exe_old, 'the new master runs the same binary');
}

# the overlap: the kept-alive connection still reaches the old zone, fresh
# connections reach either; each scrape is one zone or the other, told apart
is(state(ka_scrape($ka)), $OLD, 'overlap: kept-alive connection still scrapes the old zone');
my ($s_new, %seen, @odd);
my $overlap_end = time + 30;
for (1 .. 1000) {    # bounded: stop once both zones were seen
    my $x = fresh_scrape();
    my $pid = $x ? $x->value('deepseek_metrics_master_pid', { zone => 'z' }) : 0;
    if ($pid == $new && !defined $s_new) {
        $s_new = $x->value('deepseek_metrics_zone_start_time_seconds', { zone => 'z' });
    }
    my $st = state($x);
    if ($st eq $OLD) { $seen{old}++ }
    elsif (defined $s_new && $st eq "pid=$new start=$s_new requests=0$NEW_CODE") { $seen{new}++ }
    else { push @odd, $st }
    last if ($seen{old} && $seen{new} && $_ >= 20) || time > $overlap_end;
}
ok($seen{new}, 'overlap: a fresh connection scraped the new zone (requests 0; new module code)')
    or diag explain \%seen;
is_deeply(\@odd, [], 'overlap: every scrape is exactly the old or the new zone');
ok(defined $s_new && $s_new > $s_old, 'the new zone has a later zone_start_time')
    or diag "old $s_old new " . ($s_new // 'none');
note "overlap scrapes: old $seen{old}, new " . ($seen{new} // 0) if $seen{old};

# ------------------------------------------------------------------ WINCH, then QUIT the old master

kill 'WINCH', $old;
ok(wait_until(30, sub { workers_of($old) == 0 }), 'WINCH: the old workers exited');
ok(alive($old), 'the old master stays (a rollback is still possible)');
close $ka;

is(chats(3), 3, '3 requests after WINCH');
my @after;
for (1 .. 10) {
    my $x = fresh_scrape();
    wait_until(5, sub { $x = fresh_scrape(); $x && $x->value('deepseek_requests_in_flight') == 0 });
    push @after, state($x);
}
is_deeply(\@after, [ ("pid=$new start=" . ($s_new // '?') . " requests=3$NEW_CODE") x 10 ],
          'after WINCH: every scrape is the new zone, with exactly the 3 new requests');

ok(stop_master($old), 'QUIT: the old master exited');
ok(wait_until(10, sub { !-e "$P/logs/nginx.pid.oldbin" }), 'nginx.pid.oldbin removed');
is(read_pid("$P/logs/nginx.pid"), $new, 'nginx.pid names the new master');
is(state(fresh_scrape()), "pid=$new start=" . ($s_new // '?') . " requests=3$NEW_CODE",
   'after QUIT of the old master: the new zone');
ok(alive($new), 'the new master runs on');

ok(stop_master($new), 'QUIT: the new master exited');
%masters = ();

$t->stop;
done_testing;
