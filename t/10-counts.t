#!/usr/bin/perl
# Exact counts under concurrent load: 2 workers, thousands of requests over many
# endpoints and statuses (mock 2xx/4xx/5xx, nginx-made 502 and 504, client-aborted
# 499). Every deepseek_requests_total series is exact per (endpoint, model, status),
# the latency histogram _count per (endpoint, model) equals its requests,
# deepseek_errors_total by reason is exact, scrapes taken DURING the load parse
# strictly (monotone buckets, +Inf == _count) and never go backwards, and the
# in-flight gauge is 0 for every endpoint once the load is over.
#
# Bulk traffic: h2load (exact request counts; the per-URI split is checked against
# nginx's own access log). Special cases (504, 499): forked Perl clients.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(WNOHANG);
use DSM::Test;

plan skip_all => 'h2load not found' unless grep { -x "$_/h2load" } split /:/, $ENV{PATH};

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:10m;

    log_format dsm_counts '$request_uri $status';

    # the mock scenario comes from the query string (?st=NNN), so one h2load run
    # can mix statuses; the query does not take part in endpoint matching
    map $arg_st $xmock {
        default "";
        400 "status=400";
        402 "status=402";
        404 "status=404";
        429 "status=429";
        500 "status=500";
        503 "status=503";
    }

    upstream mock {
        server 127.0.0.1:%%MOCK_PORT%%;
        keepalive 16;
    }

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Accept-Encoding "";

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%PREFIX%%/logs/counted.log dsm_counts;
        deepseek_metrics deepseek;

        location / {
            proxy_pass http://mock;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Mock $xmock;
        }

        # nothing listens on port 1: nginx itself answers 502
        location /dead/ {
            proxy_pass http://127.0.0.1:1;
        }

        # 504: the mock sleeps 3 s before its headers, nginx waits 1 s
        location /slow/ {
            proxy_pass http://mock/;
            proxy_read_timeout 1s;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Mock "sleep_ms=3000";
        }

        # 499: the client goes away while nginx waits for the mock
        location /abort/ {
            proxy_pass http://mock/;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Mock "sleep_ms=3000";
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        access_log off;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF

my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t') or diag $out;
$t->start;

my $port = $t->port('PORT');
my $base = "http://127.0.0.1:$port";

# ------------------------------------------------------------------ the plan
# [uri, endpoint, status]; model comes from the request body of the run
my @run_a = (    # POST {"model":"deepseek-chat"}
    [ '/chat/completions',                'chat_completions', 200 ],
    [ '/chat/completions?st=429',         'chat_completions', 429 ],
    [ '/chat/completions?st=500',         'chat_completions', 500 ],
    [ '/v1/chat/completions',             'chat_completions', 200 ],
    [ '/v1/chat/completions?st=400',      'chat_completions', 400 ],
    [ '/beta/completions',                'completions',      200 ],
    [ '/beta/completions?st=402',         'completions',      402 ],
    [ '/anthropic/v1/messages',           'messages',         200 ],
    [ '/anthropic/v1/messages?st=503',    'messages',         503 ],
    [ '/something/else',                  'other',            404 ],
    [ '/dead/v1/chat/completions',        'chat_completions', 502 ],
    [ '/dead/anthropic/v1/messages',      'messages',         502 ],
);
my @run_b = (    # GET, no body: model "unknown"
    [ '/models',                          'models',           200 ],
    [ '/v1/models?st=429',                'models',           429 ],
    [ '/user/balance',                    'user_balance',     200 ],
    [ '/user/balance?st=500',             'user_balance',     500 ],
    [ '/something/else?st=503',           'other',            503 ],
);
my @run_c = (    # POST {"model":"gpt-4o"}: not allowlisted -> "other"
    [ '/v1/chat/completions',             'chat_completions', 200 ],
    [ '/something/else?st=400',           'other',            400 ],
);

# h2load: -n = clients * per_client, per_client a multiple of the URI count, so each
# client cycles its URIs round robin an equal number of times
my %runs = (
    A => { uris => \@run_a, clients => 20, rounds => 18, model => 'deepseek-chat', body => '{"model":"deepseek-chat","stream":false,"messages":[{"role":"user","content":"Hi"}]}' },
    B => { uris => \@run_b, clients => 10, rounds => 20, model => 'unknown' },
    C => { uris => \@run_c, clients => 4,  rounds => 50, model => 'other', body => '{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}' },
);
my $N504 = 8;
my $N499 = 8;

my (%exp, %exp_uri);     # "endpoint|model|status" => n ; "uri status" => n
my $total = 0;
for my $name (sort keys %runs) {
    my $r = $runs{$name};
    my $k = @{ $r->{uris} };
    $r->{n} = $r->{clients} * $r->{rounds} * $k;
    for my $u (@{ $r->{uris} }) {
        $exp{"$u->[1]|$r->{model}|$u->[2]"} += $r->{clients} * $r->{rounds};
        $exp_uri{"$u->[0] $u->[2]"} += $r->{clients} * $r->{rounds};
    }
    $total += $r->{n};
}
$exp{'chat_completions|deepseek-reasoner|504'} += $N504;
$exp_uri{"/slow/v1/chat/completions 504"} += $N504;
$exp{'messages|deepseek-reasoner|499'} += $N499;
$exp_uri{"/abort/anthropic/v1/messages 499"} += $N499;
$total += $N504 + $N499;
note("plan: $total requests");
cmp_ok($total, '>=', 3000, 'thousands of requests planned');

# ------------------------------------------------------------------ helpers

my @kids;

sub spawn {
    my ($outfile, $code) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        $SIG{$_} = "DEFAULT" for qw(INT TERM HUP ALRM);
        $SIG{PIPE} = "IGNORE";
        DSM::Test::_pdeathsig();
        my $rc = eval { $code->() } // 99;
        POSIX::_exit($rc);
    }
    push @kids, $pid;
    return $pid;
}

sub spawn_h2load {
    my ($name) = @_;
    my $r = $runs{$name};
    my @cmd = ('h2load', '--h1', '-n', $r->{n}, '-c', $r->{clients}, '-m', 1,
               '-H', 'Content-Type: application/json');
    if ($r->{body}) {
        my $f = $t->write_file("body-$name.json", $r->{body});
        push @cmd, '-d', $f;
    }
    push @cmd, map { $base . $_->[0] } @{ $r->{uris} };
    my $outf = $t->prefix . "/h2load-$name.out";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        DSM::Test::_pdeathsig();
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $outf or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    $r->{pid} = $pid;
    $r->{out} = $outf;
    push @kids, $pid;
    return $pid;
}

my %exit;   # pid => status
sub reap {
    for my $pid (@kids) {
        next if exists $exit{$pid};
        my $w = waitpid($pid, WNOHANG);
        $exit{$pid} = $? if $w == $pid;
    }
    return scalar grep { !exists $exit{$_} } @kids;
}

sub series_key { my ($l, @names) = @_; join '|', map { $l->{$_} // '' } @names }

# independent histogram check (the parser checks this too; asserted here explicitly)
sub hist_problems {
    my ($m) = @_;
    my @p;
    for my $fam ($m->families) {
        next unless ($m->type($fam) // '') eq 'histogram';
        my %s;
        for my $x ($m->samples("${fam}_bucket")) {
            my %l = %{ $x->{labels} };
            my $le = delete $l{le};
            push @{ $s{ join ',', map { "$_=$l{$_}" } sort keys %l } }, [ $le, $x->{value} ];
        }
        for my $x ($m->samples("${fam}_count")) {
            my %l = %{ $x->{labels} };
            my $k = join ',', map { "$_=$l{$_}" } sort keys %l;
            my $b = $s{$k} or do { push @p, "$fam\{$k}: _count without buckets"; next };
            my ($ple, $pv);
            for my $e (@$b) {
                my $le = $e->[0] eq '+Inf' ? 9**9**9 : $e->[0];
                push @p, "$fam\{$k}: le $e->[0] not increasing" if defined $ple && !($le > $ple);
                push @p, "$fam\{$k}: bucket le=$e->[0] $e->[1] < $pv" if defined $pv && $e->[1] < $pv;
                ($ple, $pv) = ($le, $e->[1]);
            }
            push @p, "$fam\{$k}: last bucket is le=$b->[-1][0], not +Inf" unless $b->[-1][0] eq '+Inf';
            push @p, "$fam\{$k}: +Inf $b->[-1][1] != _count $x->{value}" unless $b->[-1][1] == $x->{value};
        }
    }
    return @p;
}

sub totals {
    my ($m) = @_;
    my %v;
    for my $x ($m->samples('deepseek_requests_total')) {
        $v{ 'req:' . series_key($x->{labels}, qw(endpoint model status)) } = $x->{value};
    }
    for my $x ($m->samples('deepseek_request_latency_seconds_count')) {
        $v{ 'lat:' . series_key($x->{labels}, qw(endpoint model)) } = $x->{value};
    }
    for my $x ($m->samples('deepseek_errors_total')) {
        $v{ 'err:' . series_key($x->{labels}, qw(endpoint model reason)) } = $x->{value};
    }
    return \%v;
}

# ------------------------------------------------------------------ load

my $t0 = time;
spawn_h2load($_) for sort keys %runs;

# special cases in parallel with the bulk load
my $specials_dir = $t->prefix . '/specials';
mkdir $specials_dir;
for my $i (1 .. $N504) {
    spawn(undef, sub {
        my $r = $t->chat(model => 'deepseek-reasoner', path => '/slow/v1/chat/completions', timeout => 10);
        return $r->{status} == 504 ? 0 : 1;
    });
}
for my $i (1 .. $N499) {
    spawn(undef, sub {
        my $r = $t->chat(model => 'deepseek-reasoner', path => '/abort/anthropic/v1/messages',
                         close_after => 0.8, timeout => 10);
        return ($r->{closed_early} && $r->{status} == 0) ? 0 : 1;
    });
}

# scrapes during the load (bounded: 60 s, 600 scrapes)
my ($prev, @mono, @hist, $nscrapes, $partial, @perr) = (undef);
$nscrapes = 0;
$partial = 0;
my $deadline = time + 60;
while (reap() && time < $deadline && $nscrapes < 600) {
    my $fmt = $nscrapes % 2 ? 'openmetrics' : 'text';
    my $m = eval { $t->scrape(accept => $fmt) };
    $nscrapes++;
    if (!$m) { push @perr, "scrape $nscrapes ($fmt): $@"; next }
    push @hist, map { "scrape $nscrapes: $_" } hist_problems($m);
    my $cur = totals($m);
    my $sum = 0;
    $sum += $cur->{$_} for grep { /^req:/ } keys %$cur;
    $partial++ if $sum > 0 && $sum < $total;
    if ($prev) {
        for my $k (keys %$prev) {
            my $now = $cur->{$k} // 0;
            push @mono, "scrape $nscrapes: $k went from $prev->{$k} to $now" if $now < $prev->{$k};
        }
    }
    $prev = $cur;
    sleep 0.05;
}
my $load_time = time - $t0;
# bounded wait for stragglers, then kill whatever is left (by PID)
my $hard = time + 30;
sleep 0.1 while reap() && time < $hard;
for my $pid (grep { !exists $exit{$_} } @kids) {
    kill 'KILL', $pid;
    waitpid($pid, 0);
    $exit{$pid} = -1;
    fail("client process $pid did not finish in time");
}
note(sprintf 'load took %.1f s, %d scrapes during it', $load_time, $nscrapes);

is_deeply(\@perr, [], 'every scrape during the load parsed strictly');
is_deeply(\@hist, [], 'histograms during the load: le increasing, buckets cumulative, +Inf == _count');
is_deeply(\@mono, [], 'no counter or histogram _count decreased between scrapes');
cmp_ok($nscrapes, '>=', 5, 'at least 5 scrapes taken during the load');
cmp_ok($partial, '>=', 1, 'some scrapes saw a partial total (taken while requests were running)');

# ------------------------------------------------------------------ clients' view

for my $name (sort keys %runs) {
    my $r = $runs{$name};
    is($exit{ $r->{pid} }, 0, "h2load run $name exited 0");
    my $o = do { local $/; open my $f, '<', $r->{out} or die; <$f> };
    my ($tot, $done) = $o =~ /requests: (\d+) total, \d+ started, (\d+) done/;
    is($done, $r->{n}, "h2load run $name: $r->{n} requests done") or diag $o;
    my %cls;
    $cls{ substr($_->[2], 0, 1) . 'xx' } += $r->{clients} * $r->{rounds} for @{ $r->{uris} };
    my ($c2, $c3, $c4, $c5) = $o =~ /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/;
    is_deeply({ '2xx' => $c2 // -1, '4xx' => $c4 // -1, '5xx' => $c5 // -1 },
              { map { $_ => $cls{$_} // 0 } qw(2xx 4xx 5xx) }, "h2load run $name: status classes");
}
my @bad = grep { $exit{$_} != 0 } grep { my $p = $_; !grep { $runs{$_}{pid} == $p } keys %runs } @kids;
is(scalar(@bad), 0, "all $N504 504 clients got 504 and all $N499 aborting clients closed early");

# nginx's own record: the plan was executed as designed (validates the load generator)
my %got_uri;
my $log_deadline = time + 5;
while (1) {
    %got_uri = ();
    for (split /\n/, $t->read_log('counted.log')) { $got_uri{$_}++ }
    my $n = 0; $n += $_ for values %got_uri;
    last if $n >= $total || time > $log_deadline;
    sleep 0.1;
}
is_deeply(\%got_uri, \%exp_uri, 'access log: every URI/status exactly as planned');

# ------------------------------------------------------------------ the module's view

my $m;
my $fin_deadline = time + 5;
while (1) {   # the log phase of the last requests may run just after the client got its bytes
    $m = $t->scrape(accept => 'openmetrics');
    my $sum = $m->value('deepseek_requests_total');
    last if $sum >= $total || time > $fin_deadline;
    sleep 0.1;
}
is($m->value('deepseek_requests_total'), $total, "sum of deepseek_requests_total == $total");

my %got;
for my $x ($m->samples('deepseek_requests_total')) {
    next unless $x->{value};
    $got{ series_key($x->{labels}, qw(endpoint model status)) } += $x->{value};
}
is_deeply(\%got, \%exp, 'deepseek_requests_total exact per (endpoint, model, status), nothing else');

my %by_es;
for my $k (keys %exp) { my ($e, undef, $s) = split /\|/, $k; $by_es{"$e|$s"} += $exp{$k} }
my %got_es;
for my $x ($m->samples('deepseek_requests_total')) {
    next unless $x->{value};
    $got_es{ series_key($x->{labels}, qw(endpoint status)) } += $x->{value};
}
is_deeply(\%got_es, \%by_es, 'deepseek_requests_total exact per (endpoint, status)');

# histogram _count == requests per (endpoint, model)
my (%exp_lat, %got_lat);
for my $k (keys %exp) { my ($e, $mo) = split /\|/, $k; $exp_lat{"$e|$mo"} += $exp{$k} }
for my $x ($m->samples('deepseek_request_latency_seconds_count')) {
    $got_lat{ series_key($x->{labels}, qw(endpoint model)) } += $x->{value};
}
is_deeply(\%got_lat, \%exp_lat, 'deepseek_request_latency_seconds_count == requests per (endpoint, model)');
is_deeply([ hist_problems($m) ], [], 'final scrape: histograms consistent');

# the 504s (>= 1 s each) are alone in chat_completions/deepseek-reasoner
my $sel = { endpoint => 'chat_completions', model => 'deepseek-reasoner' };
is($m->value('deepseek_request_latency_seconds_bucket', { %$sel, le => '0.5' }), 0,
   '504 series: no observation <= 0.5 s');
is($m->value('deepseek_request_latency_seconds_bucket', { %$sel, le => '+Inf' }), $N504, '504 series: +Inf bucket');
cmp_ok($m->value('deepseek_request_latency_seconds_sum', $sel), '>=', $N504 * 0.99, '504 series: _sum >= N x 1 s');
cmp_ok($m->value('deepseek_request_latency_seconds_sum', $sel), '<', $N504 * 3, '504 series: _sum < N x 3 s');
my $sel9 = { endpoint => 'messages', model => 'deepseek-reasoner' };
is($m->value('deepseek_request_latency_seconds_bucket', { %$sel9, le => '0.5' }), 0, '499 series: no observation <= 0.5 s');
cmp_ok($m->value('deepseek_request_latency_seconds_sum', $sel9), '>=', $N499 * 0.75, '499 series: _sum >= N x 0.8 s');

# errors by reason
my %reason = (400 => 'invalid_request', 402 => 'insufficient_balance', 404 => 'not_found',
              429 => 'rate_limited', 499 => 'client_closed', 500 => 'server_error',
              502 => 'upstream_unavailable', 503 => 'overloaded', 504 => 'upstream_timeout');
my (%exp_err, %got_err);
for my $k (keys %exp) {
    my ($e, $mo, $s) = split /\|/, $k;
    next if $s < 400;
    $exp_err{"$e|$mo|$reason{$s}"} += $exp{$k};
}
for my $x ($m->samples('deepseek_errors_total')) {
    next unless $x->{value};
    $got_err{ series_key($x->{labels}, qw(endpoint model reason)) } += $x->{value};
}
is_deeply(\%got_err, \%exp_err, 'deepseek_errors_total exact per (endpoint, model, reason), no in-band errors for the 200s');

# in-flight back to 0
my @if;
my $if_deadline = time + 5;
while (1) {
    my $mm = $t->scrape(accept => 'text');
    @if = map { "$_->{labels}{endpoint}=$_->{value}" } grep { $_->{value} != 0 } $mm->samples('deepseek_requests_in_flight');
    $m = $mm;
    last if !@if || time > $if_deadline;
    sleep 0.1;
}
is_deeply(\@if, [], 'deepseek_requests_in_flight is 0 for every endpoint after the load');
my %ifeps = map { $_->{labels}{endpoint} => 1 } $m->samples('deepseek_requests_in_flight');
is_deeply([ sort keys %ifeps ],
          [ sort qw(chat_completions completions models user_balance messages responses other) ],
          'in-flight gauge exported for every built-in endpoint');

my ($pc, $pout) = $t->promtool_check($m->raw);
is($pc, 0, 'promtool check metrics on the final scrape') or diag $pout;

$t->stop;
done_testing;
