#!/usr/bin/perl
# Main requests are counted once, whatever nginx does with them on the way:
# internal redirects (error_page = @named, try_files, rewrite ... last), error_page for
# upstream errors, subrequests (mirror, SSI include virtual, auth_request) are never
# counted themselves; the export location is never counted even with deepseek_metrics
# inherited from http{}; "deepseek_metrics off" in an inner location turns counting
# off; a request that entered a counted location and was redirected to an uncounted one
# is still counted, once.
#
# Each scenario runs alone; the DELTA of every deepseek_requests_total series (and of
# the latency histogram _count) is compared with the expected one, exactly.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use DSM::Test;

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_file('html/ssi/page.html', "<p>models: <!--# include virtual=\"/v1/models\" --></p>\n");
$t->write_file('html/err502.html', "upstream down\n");
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:1m;
    deepseek_metrics z;                 # inherited by every location below

    upstream mock { server 127.0.0.1:%%MOCK_PORT%%; }
    proxy_set_header Accept-Encoding "";

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%PREFIX%%/html;

        location / {
            proxy_pass http://mock;
        }

        # the export location: never counted (deepseek_metrics inherited)
        location = /metrics { deepseek_metrics_export; }

        # 1. error_page 429 = @named (internal redirect after preaccess)
        location /ratelimited/ {
            proxy_pass http://mock;
            proxy_intercept_errors on;
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Mock "status=429";
            error_page 429 = @fallback;
        }
        location @fallback {
            proxy_pass http://mock;
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Mock "";
        }

        # 2. rewrite ... last into a counted location (before preaccess)
        location /old/ {
            rewrite ^/old/(.*)$ /v1/$1 last;
        }

        # 3. try_files into a named counted location (after preaccess)
        location /tf/ {
            try_files /nonexistent @fallback;
        }

        # 4. error_page for an nginx-made upstream error, "=" to a counted URI
        location /dead/ {
            proxy_pass http://127.0.0.1:1;
            error_page 502 = /v1/chat/completions;
        }

        # 5. error_page for an upstream error, status kept, static page
        location /dead2/ {
            proxy_pass http://127.0.0.1:1;
            error_page 502 /err502.html;
        }
        location = /err502.html { }    # static, from root

        # 6. mirror subrequest to a counted location
        location /mirrored/ {
            mirror /v1/models;
            proxy_pass http://mock;
        }

        # 7. SSI include virtual (subrequest to a counted location)
        location /ssi/ {
            ssi on;
        }

        location /ssi-off/ {
            deepseek_metrics off;
            ssi on;
            alias %%PREFIX%%/html/ssi/;
        }

        # 8. auth_request subrequest (allowed / denied)
        location /authed/ {
            auth_request /authcheck/models;
            proxy_pass http://mock;
        }
        location /denied/ {
            auth_request /authdeny/models;
            proxy_pass http://mock;
        }
        location /authcheck/ {
            internal;
            proxy_pass http://mock;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Accept-Encoding "";
        }
        location /authdeny/ {
            internal;
            proxy_pass http://mock;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Mock "status=401";
        }

        # 9. counting off in an inner location
        location /off/ {
            deepseek_metrics off;
            proxy_pass http://mock;
        }

        # 10. counted location -> uncounted one after preaccess: still counted once
        location /c2u/ {
            try_files /nonexistent @uncounted;
        }
        location /c2u-err/ {
            proxy_pass http://mock;
            proxy_intercept_errors on;
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Mock "status=429";
            error_page 429 = @uncounted;
        }
        location @uncounted {
            deepseek_metrics off;
            proxy_pass http://mock;
        }

        # 11. uncounted location -> counted one: counted once (by the counted one)
        location /u2c/ {
            deepseek_metrics off;
            try_files /nonexistent @fallback;
        }

        # 12. rewrite ... last (before preaccess) from counted into an uncounted location
        location /rw2off/ {
            rewrite ^/rw2off/(.*)$ /off/$1 last;
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF

my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t') or diag $out;
$t->start;

# ------------------------------------------------------------------ helpers

# deepseek_requests_total by "endpoint|status", latency _count by "lat:endpoint"
sub snap {
    my $m = $t->scrape(accept => 'text');
    my %v;
    $v{"$_->{labels}{endpoint}|$_->{labels}{status}"} += $_->{value} for $m->samples('deepseek_requests_total');
    $v{"lat:$_->{labels}{endpoint}"} += $_->{value} for $m->samples('deepseek_request_latency_seconds_count');
    return (\%v, $m);
}

sub delta {
    my ($a, $b) = @_;
    my %d;
    for my $k (keys %$b) { my $x = $b->{$k} - ($a->{$k} // 0); $d{$k} = $x if $x }
    return \%d;
}

sub mock_total { $t->mock_stats->{total} }

my $N = 3;

# run $code N times; expected: { "endpoint|status" => n }; mock: expected upstream requests
sub scenario {
    my ($name, $req, $want_status, $exp, $mock_exp) = @_;
    my ($before) = snap();
    my $m0 = mock_total();
    my @st;
    push @st, $req->()->{status} for 1 .. $N;
    is_deeply(\@st, [ ($want_status) x $N ], "$name: client got $want_status x $N");
    my %e = %$exp;
    # histogram _count follows requests_total per endpoint
    my %lat;
    for my $k (keys %$exp) { my ($ep) = split /\|/, $k; $lat{"lat:$ep"} += $exp->{$k} }
    %e = (%e, %lat);
    my $want = 0; $want += $_ for values %$exp;
    my ($after, $d);
    my $deadline = time + 3;
    while (1) {
        ($after) = snap();
        $d = delta($before, $after);
        my $got = 0; $got += $d->{$_} for grep { !/^lat:/ } keys %$d;
        last if $got >= $want || time > $deadline;
        sleep 0.05;
    }
    sleep 0.3;                       # late double counts (subrequests finishing) show up too
    ($after) = snap();
    is_deeply(delta($before, $after), \%e, "$name: counted exactly as expected")
        or diag explain { got => delta($before, $after), expected => \%e };
    if (defined $mock_exp) {
        my $md;
        my $md_deadline = time + 3;
        do { $md = mock_total() - $m0 } while ($md < $mock_exp && time < $md_deadline && sleep 0.05);
        is($md, $mock_exp, "$name: the mock saw $mock_exp requests (the traffic did happen)");
    }
}

sub chat { my ($path, %o) = @_; return sub { $t->chat(path => $path, %o) } }
sub get  { my ($path) = @_; return sub { $t->http(GET => $path) } }

# ------------------------------------------------------------------ scenarios

scenario('plain request (baseline)', chat('/chat/completions'), 200,
         { 'chat_completions|200' => $N }, $N);

scenario('error_page 429 = @fallback', chat('/ratelimited/chat/completions'), 200,
         { 'chat_completions|200' => $N }, 2 * $N);

scenario('rewrite ... last into a counted location', chat('/old/chat/completions'), 200,
         { 'chat_completions|200' => $N }, $N);

scenario('try_files into a named location', chat('/tf/beta/completions'), 200,
         { 'completions|200' => $N }, $N);

scenario('error_page 502 = /v1/chat/completions (nginx-made 502)', chat('/dead/v1/messages'), 200,
         { 'messages|200' => $N }, $N);

scenario('error_page 502 /err502.html (status kept)', chat('/dead2/chat/completions'), 502,
         { 'chat_completions|502' => $N }, 0);

scenario('mirror subrequest', chat('/mirrored/chat/completions'), 200,
         { 'chat_completions|200' => $N }, 2 * $N);

scenario('SSI include virtual subrequest', get('/ssi/page.html'), 200,
         { 'other|200' => $N }, $N);
{
    my $r = $t->http(GET => '/ssi/page.html');
    like($r->{body}, qr/models: .*"object":"list"/s, 'SSI: the include was served by the counted location');
}

scenario('SSI subrequest from an uncounted main request', get('/ssi-off/page.html'), 200, {}, $N);

scenario('auth_request subrequest (allowed)', chat('/authed/chat/completions'), 200,
         { 'chat_completions|200' => $N }, 2 * $N);

scenario('auth_request subrequest (denied)', chat('/denied/chat/completions'), 401,
         { 'chat_completions|401' => $N }, $N);

scenario('deepseek_metrics off in an inner location', chat('/off/chat/completions'), 200,
         {}, $N);

scenario('counted -> uncounted (try_files @uncounted): counted once', chat('/c2u/chat/completions'), 200,
         { 'chat_completions|200' => $N }, $N);

scenario('counted -> uncounted (error_page 429 = @uncounted): counted once', chat('/c2u-err/chat/completions'), 200,
         { 'chat_completions|200' => $N }, 2 * $N);

scenario('uncounted -> counted (try_files @fallback): counted once', chat('/u2c/chat/completions'), 200,
         { 'chat_completions|200' => $N }, $N);

scenario('rewrite ... last from counted into uncounted (before preaccess): not counted',
         chat('/rw2off/chat/completions'), 200, {}, $N);

# ------------------------------------------------------------------ the export location

scenario('export location with inherited deepseek_metrics (GET)', get('/metrics'), 200, {}, 0);
scenario('export location: HEAD', sub { $t->http(HEAD => '/metrics') }, 200, {}, 0);
scenario('export location: POST -> 405', sub { $t->http(POST => '/metrics', body => '{}') }, 405, {}, 0);
{
    # while it is being served, the export request is not in flight either
    my $m = $t->scrape(port => $t->port('PORT'));
    is($m->value('deepseek_requests_in_flight'), 0, 'the export request is not in the in-flight gauge');
    my ($s) = snap();
    is($s->{'other|200'} // 0, $N + 1, 'endpoint "other" holds only the SSI page requests');
    is($s->{'other|405'} // 0, 0, 'no 405 from the export location counted');
}

# ------------------------------------------------------------------ at the end

my ($m) = (snap())[1];
is($m->value('deepseek_requests_in_flight'), 0, 'in-flight 0 at the end');
my ($pc, $pout) = $t->promtool_check($m->raw);
is($pc, 0, 'promtool check metrics') or diag $pout;

$t->stop;

# ------------------------------------------------------------------ requests rejected before any location
# nginx answers an invalid request line itself (400/505) and still runs the log phase with
# the server's configuration: with deepseek_metrics inherited from http{} such a request is a
# main request handled there, so it is counted once (endpoint "other"), and must never crash
# a worker (port scanners send TLS handshakes and junk to plain-HTTP ports all the time).
{
    my $t2 = DSM::Test->new(workers => 2);
    $t2->mock_start;
    $t2->write_conf(<<'EOC');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone z:1m;
    deepseek_metrics z;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOC
    $t2->start;
    my @w0 = $t2->worker_pids;
    my @bad = (
        [ "garbage\r\n\r\n",                                     400, 'junk request line' ],
        [ "\x16\x03\x01\x00\x05hello\r\n\r\n",                    400, 'TLS handshake on a plain port' ],
        [ "GET / HTTP/9.9\r\nHost: a\r\n\r\n",                   505, 'unsupported HTTP version' ],
        [ "GET /" . ('a' x 9000) . " HTTP/1.1\r\nHost: a\r\n\r\n", 414, 'request line too long' ],
        [ "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",          400, 'duplicate Host (request line valid)' ],
    );
    my %exp;
    for my $b (@bad) {
        my $o = $t2->http_raw($b->[0], timeout => 5);
        my ($st) = $o =~ m{^HTTP/1\.[01] (\d{3})};
        is($st // 0, $b->[1], "$b->[2]: nginx answers $b->[1]");
        $exp{"other|$b->[1]"}++;
    }
    sleep 0.5;
    my $m2 = $t2->scrape(accept => 'text');
    my %got;
    $got{"$_->{labels}{endpoint}|$_->{labels}{status}"} += $_->{value}
        for grep { $_->{value} } $m2->samples('deepseek_requests_total');
    is($got{'other|400'} ? 1 : 0, 1, 'a rejected request with a valid request line is counted (endpoint "other")');
    my @crashes = grep { /worker process \d+ exited (?:on signal|with code [1-9])/ } split /\n/, $t2->read_log('error.log');
    # a request rejected before its line was parsed has no $uri (this once crashed workers)
    is(scalar(@crashes), 0, 'no worker crashed on invalid requests') or diag join "\n", @crashes;
    is_deeply([ $t2->worker_pids ], \@w0, 'same workers as before the invalid requests');
    is_deeply(\%got, \%exp, 'each rejected request counted once as endpoint "other" with its status');
    is($m2->value('deepseek_requests_in_flight'), 0, 'in-flight 0 after the rejected requests');
    $t2->stop;
}

done_testing;
