#!/usr/bin/perl
# The export location: methods (GET, HEAD, 405 for others), Content-Type
# negotiation (text 0.0.4 / OpenMetrics 1.0.0), nginx's own allow/deny,
# auth_basic and gzip around it, zone selection (one zone, all zones with a
# zone label), scrapes never counted, stable byte-identical output, and
# promtool cleanliness.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;
use DSM::Metrics;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);

my $PROM_ACCEPT = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
    . 'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';
my $TEXT_CT = qr{^text/plain; version=0\.0\.4; charset=utf-8$};
my $OM_CT   = qr{^application/openmetrics-text; version=1\.0\.0; charset=utf-8$};

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_file('conf/htpasswd', "scraper:{PLAIN}s3cret\n");
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone za:1m;
    deepseek_metrics_zone zb:1m max_series=200 buckets=0.5,1,5;

    # inherited by every server and location below, export locations included
    deepseek_metrics za;

    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
        location /b/ {
            deepseek_metrics zb;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_set_header Accept-Encoding "";
        }
        # an export location inside the counted server: not counted either
        location = /metrics { deepseek_metrics_export; }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics  { deepseek_metrics_export; }
        location = /a        { deepseek_metrics_export za; }
        location = /b        { deepseek_metrics_export zb; }
        location = /ba       { deepseek_metrics_export zb za; }
        location = /allow    { allow 127.0.0.1; deny all; deepseek_metrics_export; }
        location = /deny     { deny all; deepseek_metrics_export; }
        location = /auth {
            auth_basic "metrics";
            auth_basic_user_file %%PREFIX%%/conf/htpasswd;
            deepseek_metrics_export;
        }
        location = /gz {
            gzip on;
            gzip_types text/plain application/openmetrics-text;
            gzip_min_length 0;
            deepseek_metrics_export;
        }
        location = /gzall {
            gzip on;
            gzip_types *;
            gzip_min_length 0;
            deepseek_metrics_export;
        }
    }
}
EOF

my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t') or diag $out;
$t->start;

sub get {
    my ($path, %o) = @_;
    my $method = delete $o{method} // 'GET';
    return $t->http($method => $path, port => $t->port('METRICS_PORT'), %o);
}

sub parse_ok {
    my ($r, $name) = @_;
    my $m = eval { DSM::Metrics->parse($r->{body}, $r->{headers}{'content-type'} // '') };
    ok($m, "$name: parses strictly") or diag $@;
    return $m;
}

# ---------------------------------------------------------------- traffic
# za: 3 chat + 2 streamed chat + 1 rate limited + 1 models = 7 ; zb: 2 chat
my %want = (za => 0, zb => 0);
for (1 .. 3) { is($t->chat->{status}, 200, 'chat to za'); $want{za}++ }
for (1 .. 2) { is($t->chat(stream => 1)->{status}, 200, 'streamed chat to za'); $want{za}++ }
is($t->chat(mock => 'status=429')->{status}, 429, '429 to za'); $want{za}++;
is($t->http(GET => '/v1/models')->{status}, 200, 'models to za'); $want{za}++;
for (1 .. 2) { is($t->chat(path => '/b/chat/completions', model => 'deepseek-v4-pro')->{status}, 200, 'chat to zb'); $want{zb}++ }

# a client may see the end of its response before nginx ran the log phase (lingering
# close): wait (bounded) until nothing is in flight before exact comparisons
sub settle {
    return $t->scrape_settled(path => '/metrics');   # fails the test on a timeout
}
settle();

# ---------------------------------------------------------------- methods

my $g = get('/a');
is($g->{status}, 200, 'GET 200');
like($g->{headers}{'content-type'} // '', $TEXT_CT, 'GET without Accept: text 0.0.4 content type');
my $gm = parse_ok($g, 'GET');
my $h = get('/a', method => 'HEAD');
is($h->{status}, 200, 'HEAD 200');
like($h->{headers}{'content-type'} // '', $TEXT_CT, 'HEAD: same content type');
is($h->{body}, '', 'HEAD: no body');
if (defined $h->{headers}{'content-length'}) {
    is($h->{headers}{'content-length'}, length $g->{body}, 'HEAD: Content-Length equals the GET body length');
}
my $hom = get('/a', method => 'HEAD', headers => { Accept => $PROM_ACCEPT });
like($hom->{headers}{'content-type'} // '', $OM_CT, 'HEAD with Prometheus Accept: OpenMetrics content type');
is($hom->{body}, '', 'HEAD (OpenMetrics): no body');

for my $meth (qw(POST PUT DELETE PATCH OPTIONS)) {
    my $r = get('/a', method => $meth, body => ($meth =~ /^P/ ? 'x=1' : undef));
    is($r->{status}, 405, "$meth: 405");
    unlike($r->{body}, qr/^deepseek_/m, "$meth: no metrics in the body");
}

# ---------------------------------------------------------------- content type negotiation

my %ct_cases = (
    'none'                                   => $TEXT_CT,
    'text/plain'                             => $TEXT_CT,
    'text/plain;version=0.0.4'               => $TEXT_CT,
    '*/*'                                    => $TEXT_CT,
    'application/json;q=0.1, text/plain'    => $TEXT_CT,   # JSON: t/45-status.t
    $PROM_ACCEPT                             => $OM_CT,
    'application/openmetrics-text'           => $OM_CT,
    'application/openmetrics-text; version=1.0.0' => $OM_CT,
);
for my $acc (sort keys %ct_cases) {
    my %hd = $acc eq 'none' ? () : (Accept => $acc);
    my $r = get('/metrics', headers => \%hd);
    is($r->{status}, 200, "Accept '$acc': 200");
    like($r->{headers}{'content-type'} // '', $ct_cases{$acc}, "Accept '$acc': content type");
    my $m = parse_ok($r, "Accept '$acc'");
    if ($ct_cases{$acc} == $OM_CT) {
        like($r->{body}, qr/\n# EOF\n\z/, "Accept '$acc': '# EOF' is the last line");
        is(scalar(() = $r->{body} =~ /^# EOF$/mg), 1, "Accept '$acc': one '# EOF'");
    } else {
        unlike($r->{body}, qr/# EOF/, "Accept '$acc': no '# EOF' in text format");
    }
    is($m->value('deepseek_requests_total', { zone => 'za' }), $want{za}, "Accept '$acc': za count") if $m;
}

# ---------------------------------------------------------------- allow / deny, auth_basic

use MIME::Base64 qw(encode_base64);

# nginx's own access control around the export location, one request per case:
# [name, path, method, user:password, status, body ("metrics" or "none"), WWW-Authenticate]
my @ACCESS = (
    [ 'allow 127.0.0.1; deny all',       '/allow', 'GET',  undef,            200 ],
    [ 'deny all',                        '/deny',  'GET',  undef,            403, 'none' ],
    [ 'deny all: HEAD',                  '/deny',  'HEAD', undef,            403 ],
    [ 'auth_basic without credentials',  '/auth',  'GET',  undef,            401, 'none', qr/^Basic realm="metrics"/ ],
    [ 'auth_basic with a wrong password','/auth',  'GET',  'scraper:wrong',  401 ],
    [ 'auth_basic with an unknown user', '/auth',  'GET',  'nobody:s3cret',  401 ],
    [ 'auth_basic with credentials',     '/auth',  'GET',  'scraper:s3cret', 200, 'metrics' ],
);
for my $c (@ACCESS) {
    my ($name, $path, $method, $cred, $status, $body, $www) = @$c;
    my $r = get($path, method => $method,
                headers => defined $cred ? { Authorization => 'Basic ' . encode_base64($cred, '') } : {});
    is($r->{status}, $status, "$name: $status");
    like($r->{headers}{'www-authenticate'} // '', $www, "$name: WWW-Authenticate") if $www;
    next unless defined $body;
    if ($body eq 'none') {
        unlike($r->{body}, qr/^deepseek_/m, "$name: no metrics in the body");
    } else {
        my $am = parse_ok($r, $name);
        is($am->value('deepseek_requests_total', { zone => 'zb' }), $want{zb}, "$name: metrics served") if $am;
    }
}

# ---------------------------------------------------------------- gzip

sub gzip_case {
    my ($path, $name, $accept, $ct, $todo) = @_;
    my $plain = get($path, headers => { Accept => $accept });
    is($plain->{headers}{'content-encoding'}, undef, "$name: no Content-Encoding without Accept-Encoding");
    parse_ok($plain, "$name uncompressed");

    my $z = get($path, headers => { Accept => $accept, 'Accept-Encoding' => 'gzip' });
    is($z->{status}, 200, "$name: 200");
    like($z->{headers}{'content-type'} // '', $ct, "$name: content type kept");
    local $main::TODO = $todo if $todo;
    is($z->{headers}{'content-encoding'} // '', 'gzip', "$name: Content-Encoding: gzip");
    my $unz;
    ok(gunzip(\$z->{body} => \$unz, Transparent => 0), "$name: body decompresses") or diag $GunzipError;
    $unz //= '';
    my $zm = eval { DSM::Metrics->parse($unz, $z->{headers}{'content-type'} // '') };
    ok($zm && length $unz, "$name: decompressed body parses strictly") or diag $@;
    ok($unz eq $plain->{body}, "$name: decompressed body equals the uncompressed scrape");
    is($zm ? $zm->value('deepseek_requests_total', { zone => 'za' }) : -1, $want{za}, "$name: za count");
    ok(length($z->{body}) < length($plain->{body}), "$name: compressed is smaller");
}

for my $fmt (['text', 'text/plain;version=0.0.4', $TEXT_CT], ['openmetrics', $PROM_ACCEPT, $OM_CT]) {
    my ($name, $accept, $ct) = @$fmt;
    # gzip_types *: whatever the Content-Type, the compressed exposition is intact
    gzip_case('/gzall', "gzip_types * ($name)", $accept, $ct);
    gzip_case('/gz', "gzip_types text/plain application/openmetrics-text ($name)", $accept, $ct);
}

# ---------------------------------------------------------------- zone selection

my $sa = parse_ok(get('/a'), 'export za');
my $sb = parse_ok(get('/b'), 'export zb');
my $sall = parse_ok(get('/metrics'), 'export all');
my $sall_om = parse_ok(get('/metrics', headers => { Accept => $PROM_ACCEPT }), 'export all (OpenMetrics)');
my $sba = parse_ok(get('/ba'), 'export zb za');

if ($sa && $sb && $sall && $sall_om && $sba) {
    # single zone: only that zone, no zone label on per-request series
    is($sa->value('deepseek_requests_total'), $want{za}, 'export za: total == za traffic');
    is($sb->value('deepseek_requests_total'), $want{zb}, 'export zb: total == zb traffic');
    is(scalar(grep { exists $_->{labels}{zone} } $sa->samples('deepseek_requests_total')), 0,
       'export za: no zone label on requests_total');
    is(scalar(grep { ($_->{labels}{zone} // '') eq 'zb' } $sa->all_samples), 0, 'export za: nothing of zb');
    is(scalar(grep { ($_->{labels}{zone} // '') eq 'za' } $sb->all_samples), 0, 'export zb: nothing of za');
    is($sa->value('deepseek_metrics_series', { zone => 'za', state => 'capacity' }) > 0, 1, 'export za: series gauge of za');
    is($sb->value('deepseek_metrics_series', { zone => 'zb', state => 'capacity' }), 200, 'export zb: capacity 200');
    is($sb->count('deepseek_request_latency_seconds_bucket', { model => 'deepseek-v4-pro' }), 4,
       'export zb: its own buckets (3 + +Inf)');
    is($sa->count('deepseek_request_latency_seconds_bucket', { endpoint => 'models' }), 15,
       'export za: default buckets (14 + +Inf)');

    # all zones: zone label on every per-request series, exact per zone
    for my $m ([$sall, 'all, text'], [$sall_om, 'all, OpenMetrics'], [$sba, 'zb za']) {
        my ($s, $n) = @$m;
        is($s->value('deepseek_requests_total', { zone => 'za' }), $want{za}, "export $n: za count");
        is($s->value('deepseek_requests_total', { zone => 'zb' }), $want{zb}, "export $n: zb count");
        is($s->value('deepseek_requests_total'), $want{za} + $want{zb}, "export $n: nothing without a zone");
        my @nozone = grep { !exists $_->{labels}{zone} && $_->{name} ne 'deepseek_build_info' } $s->all_samples;
        is(scalar @nozone, 0, "export $n: every sample but build_info has a zone label")
            or diag join "\n", map { $_->{line} } @nozone[0 .. ($#nozone < 4 ? $#nozone : 4)];
        is($s->value('deepseek_requests_in_flight', { zone => 'za' }), 0, "export $n: za in flight 0");
        ok($s->count('deepseek_requests_in_flight', { zone => 'zb', endpoint => 'chat_completions' }) == 1,
           "export $n: in-flight gauge per zone");
        is($s->count('deepseek_request_latency_seconds_bucket', { zone => 'zb' }), 4, "export $n: zb buckets kept");
        is($s->value('deepseek_tokens_total', { zone => 'zb', type => 'output' }), 60, "export $n: zb output tokens");
        is($s->value('deepseek_tokens_total', { zone => 'za', type => 'output' }), 150, "export $n: za output tokens (5 x 30)");
        my %fam;
        $fam{$_}++ for $s->families;
        is(scalar(grep { $_ > 1 } values %fam), 0, "export $n: each family once");
    }
    # the per-zone sections equal the single-zone scrapes (label zone stripped)
    my $strip = sub {
        my ($m, $zone) = @_;
        my %r;
        for my $x ($m->all_samples) {
            next if $x->{name} =~ /^deepseek_(?:metrics_|build_info)/;
            my %l = %{ $x->{labels} };
            if (defined $zone) { next unless (delete($l{zone}) // '') eq $zone }
            $r{ $x->{name} . '{' . join(',', map { "$_=$l{$_}" } sort keys %l) . '}' } = $x->{value};
        }
        return \%r;
    };
    my ($pa, $pall) = ($strip->($sa), $strip->($sall, 'za'));
    ok(keys %$pa > 20, 'export za: many samples to compare');
    is_deeply($pall, $pa, 'export all: the za section equals the export of za alone');
}

# ---------------------------------------------------------------- scrapes are never counted

# dozens of scrapes happened above (200, 401, 403, 405, HEAD, gzip); one more on the counted server
is($t->http(GET => '/metrics')->{status}, 200, 'export location in the counted server: 200');
my $after = $t->scrape(path => '/metrics');
is($after->value('deepseek_requests_total', { zone => 'za' }), $want{za}, 'scrapes not counted in za');
is($after->value('deepseek_requests_total', { zone => 'zb' }), $want{zb}, 'scrapes not counted in zb');
is($after->value('deepseek_requests_total', { endpoint => 'other' }), 0, 'no endpoint="other" requests at all');
is($after->count('deepseek_request_latency_seconds_count', { endpoint => 'other' }), 0, 'no other latency series');
is($after->value('deepseek_errors_total', { reason => qr/^(?:auth|client_error)$/ }), 0,
   '401/403/405 of the export locations are not errors');
is($after->value('deepseek_requests_in_flight'), 0, 'the scrape itself is not in flight');

# ---------------------------------------------------------------- stable output

for my $c (['/metrics', {}], ['/metrics', { Accept => $PROM_ACCEPT }], ['/a', {}], ['/ba', { Accept => $PROM_ACCEPT }]) {
    my ($path, $hd) = @$c;
    my $n = "$path" . (%$hd ? ' (OpenMetrics)' : ' (text)');
    my @bodies = map { get($path, headers => $hd)->{body} } 1 .. 3;
    ok(length $bodies[0] > 1000, "$n: a full exposition");
    is($bodies[1], $bodies[0], "$n: second scrape byte-identical");
    is($bodies[2], $bodies[0], "$n: third scrape byte-identical");
}

# more traffic: new series appear, the order of the old ones is kept
is($t->chat(model => 'deepseek-reasoner', mock => 'status=500')->{status}, 500, 'a new series (500)');
$want{za}++;
settle();
my $old = $t->scrape(path => '/a');
my @o1 = map { $_->{line} } grep { $_->{name} !~ /^deepseek_metrics_/ } $old->all_samples;
is($t->chat->{status}, 200, 'one more chat');
my $new = $t->scrape(path => '/a');
my %in_old = map { (my $k = $_) =~ s/ \S+$//; $k => 1 } @o1;
my @keys_new = grep { $in_old{$_} } map { (my $k = $_->{line}) =~ s/ \S+$//; $k } $new->all_samples;
my @keys_old = map { (my $k = $_) =~ s/ \S+$//; $k } @o1;
is_deeply(\@keys_new, \@keys_old, 'series keep their relative order after more traffic');
$want{za}++;

# ---------------------------------------------------------------- promtool

for my $path ('/a', '/metrics', '/gzall') {
    my $r = get($path);
    my ($pc, $pout) = $t->promtool_check($r->{body});
    is($pc, 0, "promtool check metrics $path: exit 0") or diag $pout;
    is($pout, '', "promtool check metrics $path: no findings") or diag $pout;
}

settle();
my $final = $t->scrape(path => '/metrics', accept => 'openmetrics');
is($final->value('deepseek_requests_total', { zone => 'za' }), $want{za}, 'final: za exact');
is($final->value('deepseek_requests_total', { zone => 'za', status => '500', model => 'deepseek-reasoner' }), 1,
   'final: the 500 series');

$t->stop;
done_testing;
