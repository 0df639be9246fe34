#!/usr/bin/perl
# nginx -s reload and the zone:
#  - same configuration, or an unrelated change (a new location): counters kept exactly,
#    deepseek_metrics_reloads_total +1, zone_start_time unchanged;
#  - only buckets= / max_series= / histograms= changed (same size and name): the reload is
#    refused with an [emerg] naming the zone, the old workers keep serving with the old
#    layout and counters (and a kept zone next to the refused one is not touched);
#  - the zone's size or name changed: a fresh zone, counters at zero, NOTICE "new zone",
#    zone_start_time changes;
#  - a long streamed request in an old worker during a graceful reload is counted in the
#    kept zone and the in-flight gauge returns to 0.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;
use IO::Socket::IP;
use IO::Select;
use Time::HiRes qw(time sleep);

our $reloads_after_refused;

my $REFUSED = qr/need another layout of the same memory, refused/;

my $t = DSM::Test->new(workers => 2);
$t->allow($REFUSED);
$t->mock_start;

# conf(size => '2m', name => 'deepseek', zparams => '', extra => '', other => '')
sub conf {
    my (%o) = @_;
    my $name = $o{name} // 'deepseek';
    my $size = $o{size} // '2m';
    my $zp   = $o{zparams} // '';
    my $other = $o{other} // 'deepseek_metrics_zone other:1m;';
    my $extra = $o{extra} // '';
    return <<"EOF";
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone $name:$size $zp;
    $other

    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics $name;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
        location /o/ {
            deepseek_metrics other;
            return 204;
        }
$extra
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
}

my $want = 0;        # requests counted in the "deepseek" zone
my $want_other = 0;  # in "other"

sub traffic {
    my ($n, $what) = @_;
    for (1 .. $n) {
        my $r = $t->chat;
        is($r->{status}, 200, "$what: chat 200") or last;
        $want++;
    }
}

# a client may see the end of its response before nginx ran the log phase (lingering close):
# scrape until nothing is in flight (bounded), so exact counts are comparable
sub settled_scrape {
    my (%o) = @_;
    return $t->scrape_settled(%o);   # a gauge stuck above 0 fails the test
}

sub check {
    my ($what, %o) = @_;
    my $zone = $o{zone} // 'deepseek';
    my $m = settled_scrape(accept => $o{om} ? 'openmetrics' : 'text');
    is($m->value('deepseek_requests_total', { zone => $zone }), $o{count} // $want, "$what: exact count in $zone");
    is($m->value('deepseek_tokens_total', { zone => $zone, type => 'output' }), 30 * ($o{count} // $want),
       "$what: output tokens in $zone") if !defined $o{tokens} || $o{tokens};
    is($m->value('deepseek_metrics_reloads_total', { zone => $zone }), $o{reloads}, "$what: reloads_total of $zone")
        if defined $o{reloads};
    is($m->value('deepseek_metrics_zone_start_time_seconds', { zone => $zone }), $o{start}, "$what: zone_start_time unchanged")
        if defined $o{start};
    is($m->value('deepseek_requests_in_flight', { zone => $zone }), 0, "$what: nothing in flight");
    my ($pc, $pout) = $t->promtool_check($m->raw);
    is($pc, 0, "$what: promtool clean") or diag $pout unless $o{om};
    return $m;
}

# reload expected to be refused: wait for the [emerg] line, then check the workers stayed
sub reload_refused {
    my ($what, $zone) = @_;
    my $off = $t->log_offset;
    my @before = $t->worker_pids;
    $t->signal_master('HUP');
    my $log = '';
    my $deadline = time + 10;
    while (time < $deadline) {
        $log = $t->log_since($off);
        last if $log =~ $REFUSED;
        sleep 0.05;
    }
    like($log, qr/\[emerg\].*deepseek_metrics_zone "\Q$zone\E": .*$REFUSED.*change the zone's size or name/,
         "$what: [emerg] refused, naming zone \"$zone\" and how to apply it");
    sleep 0.5;
    is_deeply([ $t->worker_pids ], \@before, "$what: the old workers keep running");
    ok(kill(0, $t->master_pid), "$what: master alive");
    unlike($t->log_since($off), qr/new zone/, "$what: no new zone");
}

# ------------------------------------------------------------------ start

$t->write_conf(conf());
my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t') or diag $out;
my $off0 = $t->log_offset;
$t->start;
like($t->log_since($off0), qr/\[notice\].*deepseek_metrics_zone "deepseek": new zone for \d+ series, counters start at zero/,
     'first start: NOTICE new zone');

traffic(5, 'before reload');
is($t->http(GET => '/o/x')->{status}, 204, 'other zone request'); $want_other++;
my $m0 = check('before reload', reloads => 0);
my $start = $m0->value('deepseek_metrics_zone_start_time_seconds', { zone => 'deepseek' });
ok($start > time - 60 && $start <= time + 1, 'zone_start_time is now-ish');
is($m0->value('deepseek_metrics_last_reload_time_seconds', { zone => 'deepseek' }), 0, 'last_reload_time 0 before any reload');

# ------------------------------------------------------------------ same configuration

my $off = $t->log_offset;
ok($t->reload, 'reload (same configuration): new workers');
unlike($t->log_since($off), qr/new zone/, 'same configuration: no new zone');
my $m1 = check('after reload 1', reloads => 1, start => $start);
my $lr = $m1->value('deepseek_metrics_last_reload_time_seconds', { zone => 'deepseek' });
ok($lr >= $start && $lr <= time + 1, 'last_reload_time set');
is($m1->value('deepseek_requests_total', { zone => 'other' }), $want_other, 'other zone kept too');
is($m1->value('deepseek_metrics_reloads_total', { zone => 'other' }), 1, 'other zone: reloads 1');
traffic(3, 'after reload 1');
check('after reload 1 + traffic', reloads => 1, start => $start, om => 1);

# ------------------------------------------------------------------ unrelated change: a new location

$t->write_conf(conf(extra => '        location /extra/ { deepseek_metrics deepseek; return 204; }'));
ok($t->reload, 'reload (new location): new workers');
check('after reload 2 (new location)', reloads => 2, start => $start);
is($t->http(GET => '/extra/y')->{status}, 204, 'new location works');
traffic(2, 'after reload 2');
my $m2 = check('after reload 2 + traffic', count => $want + 1, tokens => 0, reloads => 2, start => $start);
is($m2->value('deepseek_requests_total', { zone => 'deepseek', endpoint => 'other', status => '204' }), 1,
   'the new location counts');
$want_other += 0;
my $want_extra = 1;

# ------------------------------------------------------------------ refused layout changes

my $good = conf(extra => '        location /extra/ { deepseek_metrics deepseek; return 204; }');
my @refusals = (
    [ 'buckets changed',    conf(zparams => 'buckets=0.1,1,10') ],
    [ 'max_series changed', conf(zparams => 'max_series=300') ],
    [ 'histograms changed', conf(zparams => 'histograms=latency') ],
);
for my $rf (@refusals) {
    my ($what, $c) = @$rf;
    $t->write_conf($c);
    my ($tc, $tout) = $t->nginx_t;
    is($tc, 0, "$what: nginx -t alone cannot see the running zone (passes)") or diag $tout;
    reload_refused($what, 'deepseek');
    traffic(2, "$what, old workers");
    my $m = check("$what: old workers", count => $want + $want_extra, tokens => 0, reloads => 2, start => $start);
    is($m->value('deepseek_tokens_total', { zone => 'deepseek', type => 'output' }), 30 * $want, "$what: tokens exact");
    is($m->count('deepseek_request_latency_seconds_bucket', { zone => 'deepseek', endpoint => 'chat_completions' }), 15,
       "$what: old buckets (14 + +Inf) still served");
    is($m->value('deepseek_metrics_series', { zone => 'deepseek', state => 'capacity' }),
       $m0->value('deepseek_metrics_series', { zone => 'deepseek', state => 'capacity' }), "$what: old capacity");
    is($m->value('deepseek_metrics_reloads_total', { zone => 'other' }), 2, "$what: other zone's reloads unchanged");
}

# the refused zone declared after a kept one: the kept zone must not count a reload that did not happen
$t->write_conf(conf(other => 'deepseek_metrics_zone other:1m buckets=0.5,5;'));
reload_refused('buckets of the second zone changed', 'other');
{
    my $m = settled_scrape();
    is($m->value('deepseek_metrics_reloads_total', { zone => 'deepseek' }), 2,
       'refused reload (other zone): reloads_total of the kept zone unchanged');
    $main::reloads_after_refused = $m->value('deepseek_metrics_reloads_total', { zone => 'deepseek' });
    is($m->value('deepseek_requests_total', { zone => 'deepseek' }), $want + $want_extra, 'refused reload: counts kept');
    is($m->value('deepseek_requests_total', { zone => 'other' }), $want_other, 'refused reload: other zone kept');
    is($m->count('deepseek_request_latency_seconds_bucket', { zone => 'other' }), 15, 'other zone: old buckets');
}

# back to the running configuration: a normal reload works again
$t->write_conf($good);
ok($t->reload, 'reload back to the running configuration');
my $m3 = settled_scrape();
my $reloads_now = $m3->value('deepseek_metrics_reloads_total', { zone => 'deepseek' });
is($reloads_now, $main::reloads_after_refused + 1, 'the good reload adds exactly one to reloads_total');
is($reloads_now, 3, 'reloads_total counts the 3 reloads that happened');
is($m3->value('deepseek_requests_total', { zone => 'deepseek' }), $want + $want_extra, 'counts kept after the good reload');
is($m3->value('deepseek_metrics_zone_start_time_seconds', { zone => 'deepseek' }), $start, 'start time kept');

# ------------------------------------------------------------------ graceful reload with a long request in an old worker

{
    my $body = '{"model":"deepseek-flash","stream":true,"messages":[{"role":"user","content":"Hi"}]}';
    my $req = "POST /chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nX-Mock: keepalive_ms=3000;keepalive_every_ms=250\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $t->port('PORT'), Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    $s->autoflush(1);
    my $t0 = time;
    $s->syswrite($req);
    # wait until the response started (headers + the first keep-alive comment)
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $dl = time + 5;
    while (time < $dl && $raw !~ /keep-alive/) {
        last unless $sel->can_read($dl - time);
        my $n = sysread($s, $raw, 65536, length $raw);
        last unless $n;
    }
    like($raw, qr{^HTTP/1\.1 200.*: keep-alive}s, 'long stream started');
    my $mid = $t->scrape;
    is($mid->value('deepseek_requests_in_flight', { zone => 'deepseek', endpoint => 'chat_completions' }), 1,
       'in flight: 1 before the reload');
    my @old = $t->worker_pids;
    ok($t->reload, 'graceful reload during the long request');
    my @shutting = grep { my $p = $_; !grep { $_ == $p } $t->worker_pids } $t->all_worker_pids;
    ok(@shutting >= 1, 'an old worker is still finishing the request');
    my $during = $t->scrape;
    is($during->value('deepseek_requests_in_flight', { zone => 'deepseek', endpoint => 'chat_completions' }), 1,
       'in flight: 1 after the reload, seen by the new workers');
    is($during->value('deepseek_requests_total', { zone => 'deepseek' }), $want + $want_extra, 'not counted yet');
    $dl = time + 15;
    while (time < $dl) {
        last unless $sel->can_read($dl - time);
        my $n = sysread($s, $raw, 65536, length $raw);
        last unless $n;
    }
    close $s;
    my $el = time - $t0;
    like($raw, qr/data: \[DONE\]/, 'long stream complete');
    ok($el >= 2.5, sprintf('it took the keep-alive time (%.2fs)', $el));
    $want++;
    # the old worker logs the request, then exits
    my $after;
    for (1 .. 50) {
        $after = $t->scrape;
        last if $after->value('deepseek_requests_total', { zone => 'deepseek' }) == $want + $want_extra
             && $after->value('deepseek_requests_in_flight') == 0;
        sleep 0.1;
    }
    is($after->value('deepseek_requests_total', { zone => 'deepseek' }), $want + $want_extra,
       'the old worker counted the request in the kept zone');
    is($after->value('deepseek_tokens_total', { zone => 'deepseek', type => 'output' }), 30 * $want, 'its tokens counted');
    is($after->value('deepseek_requests_in_flight'), 0, 'in-flight gauge back to 0');
    is($after->value('deepseek_time_to_first_token_seconds_count', { zone => 'deepseek' }), 1, 'its TTFT observed');
    is($after->value('deepseek_time_to_first_token_seconds_bucket', { zone => 'deepseek', le => '2.5' }), 0,
       'TTFT above 2.5 s (the keep-alive time)');
    # an exiting worker drops out of the listing (its cmdline empties) before
    # the master reaps it, and an ASan worker takes a while there: wait for
    # both the listing and the pids themselves
    my $gone = 0;
    my %left = map { $_ => 1 } @old;
    for (1 .. 200) {
        delete @left{ grep { !kill(0, $_) } keys %left };
        my @a = $t->all_worker_pids;
        if (@a == 2 && !%left) { $gone = 1; last }
        sleep 0.05;
    }
    ok($gone, 'the old worker exited');
    ok(!kill(0, $_), "old worker $_ gone") for @old;
}

# ------------------------------------------------------------------ zone size change: a fresh zone

sleep 0.05 while time < $start + 1.1;   # so a new start time can differ
$t->write_conf(conf(size => '3m', extra => '        location /extra/ { deepseek_metrics deepseek; return 204; }'));
$off = $t->log_offset;
ok($t->reload, 'reload with another zone size: new workers');
like($t->log_since($off), qr/\[notice\].*deepseek_metrics_zone "deepseek": new zone for \d+ series, counters start at zero/,
     'size change: NOTICE new zone');
unlike($t->log_since($off), qr/new zone[^\n]*"other"|"other"[^\n]*new zone/, 'the unchanged zone is kept');
my $m4 = $t->scrape;
is($m4->value('deepseek_requests_total', { zone => 'deepseek' }), 0, 'fresh zone: requests start at zero');
is($m4->count('deepseek_requests_total', { zone => 'deepseek' }), 0, 'fresh zone: no series');
is($m4->value('deepseek_metrics_reloads_total', { zone => 'deepseek' }), 0, 'fresh zone: reloads 0');
my $start2 = $m4->value('deepseek_metrics_zone_start_time_seconds', { zone => 'deepseek' });
ok($start2 > $start, "fresh zone: zone_start_time changed ($start -> $start2)");
ok($m4->value('deepseek_metrics_series', { zone => 'deepseek', state => 'capacity' })
   > $m0->value('deepseek_metrics_series', { zone => 'deepseek', state => 'capacity' }), 'fresh zone: bigger capacity');
is($m4->value('deepseek_requests_total', { zone => 'other' }), $want_other, 'the other zone kept its counts');
$want = 0; $want_extra = 0;
traffic(4, 'fresh zone');
check('fresh zone + traffic', reloads => 0, start => $start2);

# and a size change may come with new buckets
sleep 0.05 while time < $start2 + 1.1;
$t->write_conf(conf(size => '4m', zparams => 'buckets=0.1,1,10'));
$off = $t->log_offset;
ok($t->reload, 'reload with another size and new buckets');
like($t->log_since($off), qr/"deepseek": new zone/, 'size + buckets: new zone');
unlike($t->log_since($off), $REFUSED, 'size + buckets: not refused');
$want = 0;
traffic(2, 'new buckets');
my $m5 = check('new buckets', reloads => 0);
is($m5->count('deepseek_request_latency_seconds_bucket', { zone => 'deepseek', endpoint => 'chat_completions' }), 4,
   'the new buckets are used (3 + +Inf)');

# ------------------------------------------------------------------ zone name change

my $c6 = conf(size => '4m', zparams => 'buckets=0.1,1,10', name => 'renamed');
$t->write_conf($c6);
$off = $t->log_offset;
ok($t->reload, 'reload with a renamed zone');
like($t->log_since($off), qr/"renamed": new zone/, 'rename: new zone');
my $m6 = $t->scrape;
is($m6->count('deepseek_metrics_series', { zone => 'deepseek' }), 0, 'the old zone is no longer exported');
is($m6->value('deepseek_requests_total', { zone => 'renamed' }), 0, 'renamed zone starts at zero');
$want = 0;
traffic(2, 'renamed');
check('renamed + traffic', zone => 'renamed', reloads => 0);

$t->stop;
done_testing;
