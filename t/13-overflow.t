#!/usr/bin/perl
# Zone capacity: max_series=20 with a user label taking 100 distinct values.
# used == capacity == 20, the overflow series (endpoint/model "__overflow__", no user
# label; docs/metrics.md: its requests_total keeps the real status) carries the rest, deepseek_metrics_dropped_total counts exactly the
# overflowed observations, totals stay exact, no crash, exactly one "is full" warning.
# A zone too small for max_series fails nginx -t with the size needed (and that size works).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(WNOHANG);
use DSM::Test;

plan skip_all => 'h2load not found' unless grep { -x "$_/h2load" } split /:/, $ENV{PATH};

my $CONF = <<'EOF';
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:%%SIZE%% max_series=%%MAX%%;
    deepseek_metrics_zone z3:%%SIZE%% max_series=%%MAX%%;
    deepseek_metrics_label user $arg_u;

    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }

    # a second zone, filled from empty by concurrent clients (race for the last series)
    server {
        listen 127.0.0.1:%%PORT2%%;
        deepseek_metrics z3;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export z; }
        location = /metrics3 { deepseek_metrics_export z3; }
    }
}
EOF

sub conf { my ($size, $max) = @_; my $c = $CONF; $c =~ s/%%SIZE%%/$size/g; $c =~ s/%%MAX%%/$max/g; $c }

# ------------------------------------------------------------------ nginx -t: too small

{
    my $t = DSM::Test->new(workers => 2);
    $t->mock_start;
    $t->write_conf(conf('64k', 100000));
    my ($code, $out) = $t->nginx_t;
    isnt($code, 0, 'nginx -t fails: 64k zone for max_series=100000');
    like($out, qr/\[emerg\].*zone "z" is too small for max_series=100000.*set its size to at least (\d+)k/,
         'the message names the zone, max_series and the size needed') or diag $out;
    my ($need) = $out =~ /at least (\d+)k/;
    if ($need) {
        cmp_ok($need, '>', 64, "the size needed (${need}k) is more than the given 64k");
        $t->write_conf(conf("${need}k", 100000));
        my ($c2, $o2) = $t->nginx_t;
        is($c2, 0, "nginx -t accepts the suggested size ${need}k") or diag $o2;
        $t->write_conf(conf('1m', 20));
        my ($c3, $o3) = $t->nginx_t;
        is($c3, 0, 'nginx -t accepts 1m for max_series=20') or diag $o3;
    } else {
        fail('no size in the message') for 1 .. 3;
    }
    $t->stop;
}

# ------------------------------------------------------------------ overflow

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(conf('1m', 20));
$t->start;
my $port = $t->port('PORT');

my @users = map { sprintf 'user%03d', $_ } 1 .. 100;
my $body = $t->write_file('chat.json', '{"model":"deepseek-flash","messages":[{"role":"user","content":"Hi"}]}');
my @uris = map { "http://127.0.0.1:$port/chat/completions?u=$_" } @users;

sub h2load {
    my ($n, $c, $tag, $uris) = @_;
    $uris //= \@uris;
    my $outf = $t->prefix . "/h2load-$tag.out";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        DSM::Test::_pdeathsig();
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $outf or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        exec 'h2load', '--h1', '-n', $n, '-c', $c, '-m', 1, '-H', 'Content-Type: application/json',
             '-d', $body, @$uris or POSIX::_exit(127);
    }
    my $deadline = time + 60;
    my $st;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) { $st = $?; last }
        sleep 0.05;
    }
    if (!defined $st) { kill 'KILL', $pid; waitpid($pid, 0); $st = -1 }
    my $o = do { local $/; open my $f, '<', $outf or die; <$f> };
    my ($c2) = $o =~ /status codes: (\d+) 2xx/;
    is($st, 0, "h2load $tag exited 0");
    is($c2, $n, "h2load $tag: $n x 200") or diag $o;
}

sub scrape_until {
    my ($total, $path) = @_;
    my $m;
    $t->wait_until(sub {
        $m = $t->scrape(accept => 'openmetrics', path => $path // '/metrics');
        $m->value('deepseek_requests_total') >= $total;
    }, 5, "requests_total >= $total at " . ($path // '/metrics'));
    return $m;
}

sub check {
    my ($m, $tag, $total, $per_user, $dropped, $zone, $owners) = @_;
    $zone //= 'z';
    is($m->value('deepseek_metrics_series', { zone => $zone, state => 'used' }), 20, "$tag: series used == 20");
    is($m->value('deepseek_metrics_series', { zone => $zone, state => 'capacity' }), 20, "$tag: capacity == 20");
    is($m->value('deepseek_metrics_dropped_total', { zone => $zone }), $dropped, "$tag: dropped_total == $dropped");
    is($m->value('deepseek_requests_total'), $total, "$tag: sum of deepseek_requests_total == $total (exact)");
    is($m->value('deepseek_requests_total', { status => '200' }), $total, "$tag: total by status exact too");

    my @ov = $m->samples('deepseek_requests_total', { endpoint => '__overflow__' });
    is(scalar(@ov), 1, "$tag: one overflow series in deepseek_requests_total");
    if (@ov) {
        # SPEC/brief said status="__overflow__"; docs/metrics.md (module commit 5723b92) keeps the
        # real status so that totals by status stay exact: asserted as documented
        is_deeply($ov[0]{labels}, { endpoint => '__overflow__', model => '__overflow__', status => '200' },
                  "$tag: overflow series labels: no user label, real status (docs/metrics.md)");
        is($ov[0]{value}, $dropped, "$tag: overflow series carries the $dropped overflowed requests");
    } else {
        fail("$tag: overflow labels"); fail("$tag: overflow value");
    }

    my %got;
    for my $x ($m->samples('deepseek_requests_total')) {
        next if $x->{labels}{endpoint} eq '__overflow__';
        $got{ $x->{labels}{user} // '(none)' } += $x->{value};
        }
    if ($owners) {   # which 20 won the race is not known: 20 distinct users, each with all its requests
        my @own = grep { $got{$_} } sort keys %got;
        is(scalar(@own), 20, "$tag: 20 users own the 20 series");
        is_deeply([ grep { $got{$_} != $per_user } @own ], [], "$tag: each owner has all its $per_user requests");
        is(scalar(grep { !/^user\d{3}$/ } @own), 0, "$tag: owners are real users");
    } else {
        my %exp = map { $_ => $per_user } @users[0 .. 19];
        is_deeply(\%got, \%exp, "$tag: the first 20 users own the 20 series, $per_user requests each");
    }

    is($m->value('deepseek_request_latency_seconds_count'), $total, "$tag: latency histogram counts all $total");
    is($m->value('deepseek_request_latency_seconds_count', { endpoint => '__overflow__', model => '__overflow__' }),
       $dropped, "$tag: overflow histogram _count == dropped");
    # tokens: the mock's deterministic usage (hit 8, miss 12, output 30) per request, overflow included
    is($m->value('deepseek_tokens_total', { type => 'output' }), 30 * $total, "$tag: output tokens exact over all series");
    is($m->value('deepseek_tokens_total', { endpoint => '__overflow__', type => 'output' }), 30 * $dropped,
       "$tag: overflow tokens");
    my ($pc, $pout) = $t->promtool_check($t->scrape(accept => 'text', path => $zone eq 'z' ? '/metrics' : '/metrics3')->raw);
    is($pc, 0, "$tag: promtool check metrics") or diag $pout;
}

sub full_warnings {
    my ($zone) = @_;
    $zone //= 'z';
    my @l = grep { /"\Q$zone\E" is full/ } split /\n/, $t->read_log('error.log');
    return @l;
}

# one client: each of the 100 URIs twice, in order (user001 .. user100, user001 .. user100)
h2load(200, 1, 'sequential');
my $m = scrape_until(200);
check($m, 'sequential', 200, 2, 80 * 2);
my @w = full_warnings();
is(scalar(@w), 1, 'exactly one "is full" line in the error log');
like($w[0] // '', qr/\[warn\].*deepseek_metrics_zone "z" is full/, 'it is a [warn] naming the zone');

# concurrent, both workers: 10 clients, each URI once per client
h2load(1000, 10, 'concurrent');
$m = scrape_until(1200);
check($m, 'concurrent', 1200, 12, 80 * 12);
is(scalar(full_warnings()), 1, 'still exactly one "is full" line (no flood)');
# zone z3 filled from empty by 10 concurrent clients on both workers
my $port2 = $t->port('PORT2');
my @uris3 = map { "http://127.0.0.1:$port2/chat/completions?u=$_" } @users;
h2load(1000, 10, 'race', \@uris3);
$m = scrape_until(1000, '/metrics3');
check($m, 'race from empty', 1000, 10, 80 * 10, 'z3', 1);
is(scalar(full_warnings('z3')), 1, 'zone z3: exactly one "is full" line');
is(scalar(full_warnings('z')), 1, 'zone z: still one');

my @wp = $t->worker_pids;
is(scalar(@wp), 2, 'both workers alive');
is_deeply([ grep { /\[(?:alert|emerg|crit)\]|signal/ } split /\n/, $t->read_log('error.log') ], [], 'no crash or alert');

$t->stop;

# ------------------------------------------------------------------ per-label-set status slots
# docs/metrics.md: a label set has 12 slots for its distinct statuses and failure reasons;
# further kinds go to the overflow series, totals by status stay exact.
{
    my $t2 = DSM::Test->new(workers => 2);
    $t2->mock_start;
    $t2->write_conf(<<'EOC');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z2:1m max_series=4;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics z2;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOC
    $t2->start;
    my %reason = (400 => 'invalid_request', 401 => 'auth', 402 => 'insufficient_balance', 403 => 'auth',
                  404 => 'not_found', 409 => 'client_error', 410 => 'client_error', 418 => 'client_error',
                  422 => 'invalid_request', 429 => 'rate_limited', 500 => 'server_error', 501 => 'server_error',
                  503 => 'overloaded', 505 => 'server_error');
    my @st = sort keys %reason;
    my $bad = 0;
    for my $round (1 .. 3) {
        for my $s (@st) {
            my $r = $t2->chat(model => 'deepseek-flash', mock => "status=$s");
            $bad++ unless $r->{status} == $s;
        }
    }
    is($bad, 0, scalar(@st) . ' distinct statuses x 3 answered as asked');
    my $m2 = $t2->scrape(accept => 'text');
    for (1 .. 50) { last if $m2->value('deepseek_requests_total') >= 3 * @st; sleep 0.1; $m2 = $t2->scrape(accept => 'text') }
    is($m2->value('deepseek_requests_total'), 3 * @st, 'slots: grand total exact');
    my %got = map { $_ => $m2->value('deepseek_requests_total', { status => $_ }) } @st;
    is_deeply(\%got, { map { $_ => 3 } @st }, 'slots: every status exact (overflow keeps the status)');
    my @real = grep { $_->{labels}{endpoint} eq 'chat_completions' } $m2->samples('deepseek_requests_total');
    cmp_ok(scalar(@real), '<=', 12, 'the label set shows at most 12 statuses');
    my $drop = $m2->value('deepseek_metrics_dropped_total', { zone => 'z2' });
    cmp_ok($drop, '>=', 3 * (@st - 12), 'statuses beyond 12 slots went to the overflow series (dropped_total)');
    is($m2->value('deepseek_requests_total', { endpoint => '__overflow__' }), $drop,
       'the overflow series carries exactly dropped_total requests');
    is($m2->value('deepseek_metrics_series', { zone => 'z2', state => 'used' }), 1, 'one label set used');
    my (%er, %ee);
    $ee{ $reason{$_} } += 3 for @st;
    $er{ $_->{labels}{reason} } += $_->{value} for grep { $_->{value} } $m2->samples('deepseek_errors_total');
    is_deeply(\%er, \%ee, 'errors_total by reason exact over all series');
    $t2->stop;
}
done_testing;
