#!/usr/bin/perl
# The export location's views by content negotiation: which Accept headers get
# the exposition (text or OpenMetrics), JSON or the status page (one line per
# case); Vary: Accept; scrapers' answers byte-identical across their Accept
# headers; the JSON view equals the exposition of the same traffic number for
# number, both ways (every sample is in the JSON, every JSON number in the
# exposition); the page's script and style sheet; the rates the page's
# script computes from two JSON reads with known traffic between them (under
# node).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;
use DSM::Metrics;
use JSON::PP;
use POSIX ();

my $PROM_ACCEPT = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
    . 'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';
my $CHROME = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,'
    . 'image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';
my $FIREFOX = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone za:1m;
    deepseek_metrics_zone zb:1m max_series=2 buckets=0.05,0.5,5;
    deepseek_metrics_price deepseek-flash 'U"S\\D' hit=0.07 miss=0.27 output=1.1;
    deepseek_metrics_label user $http_x_user;
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
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
        location = /a       { deepseek_metrics_export za; }
    }
}
EOF
$t->start;

sub get {
    my ($path, %hd) = @_;
    return $t->http(GET => $path, port => $t->port('METRICS_PORT'), headers => \%hd);
}

# ---------------------------------------------------------------- traffic
# za: chats (plain, streamed, reasoner), errors, a hostile user label; zb has
# room for 2 series: the third label set goes to the overflow series

is($t->chat->{status}, 200, 'chat') for 1 .. 3;
is($t->chat(stream => 1)->{status}, 200, 'streamed chat') for 1 .. 2;
is($t->chat(model => 'deepseek-reasoner', stream => 1)->{status}, 200, 'reasoner');
is($t->chat(mock => 'status=429')->{status}, 429, 'a 429');
is($t->chat(mock => 'status=500', model => 'deepseek-reasoner')->{status}, 500, 'a 500');
is($t->chat(mock => 'finish=content_filter')->{status}, 200, 'in-band failure');
is($t->chat(mock => 'no_usage=1')->{status}, 200, 'usage missing');
is($t->http(GET => '/v1/models')->{status}, 200, 'models');
is($t->chat(stream => 1, model => 'deepseek-v4-pro', mock => 'keepalive_ms=300;keepalive_every_ms=100')->{status}, 200,
   'a stream with keep-alives');
is($t->http(GET => '/user/balance', mock => 'balance_total=-1.5;balance_extra=USD:2.25:0.25:2')->{status}, 200,
   'a balance reading');
is($t->chat(headers => { 'X-User' => "a\"b\\c \xc3\xa9 \xff" })->{status}, 200, 'hostile user label');
for my $m (qw(deepseek-flash deepseek-v4-pro deepseek-reasoner)) {
    is($t->chat(path => '/b/chat/completions', model => $m)->{status}, 200, "zb $m");
}
$t->scrape_settled(path => '/metrics');

# ---------------------------------------------------------------- negotiation
# [Accept header (undef: none), view]: text, om (the exposition), json, html

my @ACCEPT = (
    [ undef,                                                   'text' ],
    [ '*/*',                                                   'text' ],
    [ 'text/plain',                                            'text' ],
    [ 'text/plain;version=0.0.4',                              'text' ],
    [ 'text/*',                                                'text' ],
    [ $PROM_ACCEPT,                                            'om'   ],
    [ 'application/openmetrics-text',                          'om'   ],
    [ 'application/json',                                      'json' ],
    [ 'Application/JSON',                                      'json' ],
    [ 'application/json;q=0.9, */*;q=0.1',                     'json' ],
    [ 'application/json, */*',                                 'json' ],
    [ 'application/json, text/plain, */*',                     'text' ],
    [ 'application/json;q=0.5, text/plain',                    'text' ],
    [ 'application/json;q=0.5, */*',                           'text' ],
    [ 'application/json;q=0, */*;q=0.1',                       'text' ],
    [ 'application/json;q=0',                                  'text' ],
    [ 'application/json;q=2',                                  'text' ],
    [ 'application/json;q=1.5',                                'text' ],
    [ 'application/json;q=0.5x',                               'text' ],
    [ 'application/*',                                         'text' ],
    [ $CHROME,                                                 'html' ],
    [ $FIREFOX,                                                'html' ],
    [ 'text/html',                                             'html' ],
    [ 'text/html;q=0.5, */*;q=0.1',                            'html' ],
    [ 'text/html;q=0.1, */*;q=0.5',                            'text' ],
    [ 'text/html, application/json',                           'json' ],
    [ 'text/html;level=1;q=0.9 , application/json ; q=0.8',    'html' ],
    [ 'text/html;q=0.5, application/openmetrics-text;q=0.6',   'om'   ],
    # text or OpenMetrics: as before issue 11, any mention of openmetrics-text
    [ 'text/plain;q=0.1, application/openmetrics-text;q=0, */*', 'om'   ],
    [ 'text/plain;q=0.1, application/openmetrics-text;q=0.1, text/html;q=0.3, */*;q=0.5',
                                                               'html' ],
    [ 'image/png',                                             'text' ],
    [ 'garbage',                                               'text' ],
    [ ';;,,/,q=1',                                             'text' ],
);

my %CT = (
    text => qr{^text/plain; version=0\.0\.4; charset=utf-8$},
    om   => qr{^application/openmetrics-text; version=1\.0\.0; charset=utf-8$},
    json => qr{^application/json$},
    html => qr{^text/html; charset=utf-8$},
);

my (%body, $json_body);
for my $c (@ACCEPT) {
    my ($acc, $view) = @$c;
    my $name = defined $acc ? "Accept '$acc'" : 'no Accept';
    my $r = get('/metrics', defined $acc ? (Accept => $acc) : ());
    is($r->{status}, 200, "$name: 200");
    like($r->{headers}{'content-type'} // '', $CT{$view}, "$name: $view");
    is($r->{headers}{vary}, 'Accept', "$name: Vary: Accept");
    push @{ $body{$view} }, [$name, $r->{body}];
}

# every scraper's answer is the same exposition, byte for byte
for my $view (qw(text om)) {
    my ($first, @rest) = @{ $body{$view} };
    ok(DSM::Metrics->parse($first->[1], $view eq 'om' ? 'application/openmetrics-text' : 'text/plain'),
       "$view: parses strictly");
    is($_->[1], $first->[1], "$_->[0]: byte-identical to $first->[0]") for @rest;
}

# ---------------------------------------------------------------- the page and its parts

my $page = get('/metrics', Accept => 'text/html');
like($page->{body}, qr{^<!DOCTYPE html>}, 'page: an HTML document');
like($page->{body}, qr{<link rel="stylesheet" href="\?css">}, 'page: its style sheet at ?css');
like($page->{body}, qr{<script src="\?js" defer></script>}, 'page: its script at ?js');
unlike($page->{body}, qr{<script>|<style|\sstyle=|\son[a-z]+=}, 'page: no inline script or style');
like($page->{headers}{'content-security-policy'} // '', qr{^default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'},
     'page: a strict Content-Security-Policy');
is($page->{headers}{'cache-control'}, 'no-store', 'page: Cache-Control');
my $size = length $page->{body};
for my $part (['js', qr{^text/javascript; charset=utf-8$}, qr{function quantile}],
              ['css', qr{^text/css; charset=utf-8$}, qr{\btable\{}]) {
    my ($q, $ct, $re) = @$part;
    for my $acc (undef, '*/*', 'text/html') {
        my $r = get("/metrics?$q", defined $acc ? (Accept => $acc) : ());
        is($r->{status}, 200, "?$q: 200");
        like($r->{headers}{'content-type'} // '', $ct, "?$q: content type");
        like($r->{body}, $re, "?$q: its content");
        is($r->{headers}{'x-content-type-options'}, 'nosniff', "?$q: nosniff");
    }
    $size += length get("/metrics?$q")->{body};
}
ok($size < 16384, "page, script and style sheet: $size bytes, under 16 KB");
is(get('/metrics?jsx')->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8',
   'another query string: the exposition');
my $head = $t->http(HEAD => '/metrics', port => $t->port('METRICS_PORT'), headers => { Accept => 'application/json' });
is($head->{status}, 200, 'HEAD JSON: 200');
is($head->{body}, '', 'HEAD JSON: no body');


# ---------------------------------------------------------------- JSON equals the exposition

# one read of each, nothing finishing in between; one request stays in flight
# (the mock never answers; the client gives up after 4 s, a 499)
my $slow = fork // die "fork: $!";
if (!$slow) {
    $t->http(GET => '/v1/models', mock => 'hang=1', close_after => 4);
    POSIX::_exit(0);
}
$t->wait_until(sub { get('/metrics')->{body} =~ /^deepseek_requests_in_flight\{zone="za",endpoint="models"\} 1$/m },
               5, 'a models request in flight');
my $text = get('/metrics')->{body};
my $jr = get('/metrics', Accept => 'application/json');
# not ->utf8: label values stay bytes, as DSM::Metrics gives them
my $j = eval { JSON::PP->new->decode($jr->{body}) };
ok($j, 'JSON: parses') or diag $@;
my $m = DSM::Metrics->parse($text, 'text/plain');

# JSON as flat "path = number" pairs; each exposition sample names one path
my %json;
sub flat {
    my ($p, $v) = @_;
    if (ref $v eq 'HASH') { flat("$p/$_", $v->{$_}) for keys %$v }
    elsif (ref $v eq 'ARRAY') { flat("$p/$_", $v->[$_]) for 0 .. $#$v }
    else { $json{$p} = $v }
}
my %bounds;
for my $z (@{ $j->{zones} }) {
    my $zp = "zone=$z->{zone}";
    for my $k (keys %$z) {
        next if $k eq 'series' || $k eq 'zone';
        if ($k eq 'buckets') { $bounds{$z->{zone}} = $z->{buckets}; next }
        flat("$zp/$k", $z->{$k});
    }
    for my $s (@{ $z->{series} }) {
        my $l = $s->{labels};
        my $sp = "$zp/" . join(',', map { "$_=$l->{$_}" } sort keys %$l);
        flat("$sp/$_", $s->{$_}) for grep { $_ ne 'labels' } keys %$s;
    }
}
flat('build_info', $j->{build_info});

my %HIST = map { $_ => 1 } qw(request_latency_seconds time_to_first_token_seconds
    time_to_first_answer_token_seconds queue_wait_seconds time_per_output_token_seconds
    stream_max_gap_seconds);
my (%seen, @unmapped);
my $nzones = scalar @{ $j->{zones} };
for my $s ($m->all_samples) {
    my %l = %{ $s->{labels} };
    (my $name = $s->{name}) =~ s/^deepseek_//;
    my $zone = delete $l{zone} // $j->{zones}[0]{zone};
    my $path;
    if ($name eq 'build_info') {
        is($s->{value}, 1, 'build_info 1');
        is($json{'build_info/version'}, $l{version}, 'JSON: version');
        is($json{'build_info/nginx_version'}, $l{nginx_version}, 'JSON: nginx_version');
        $seen{'build_info/version'} = $seen{'build_info/nginx_version'} = 1;
        next;
    } elsif ($name =~ /^metrics_series$/) {
        $path = "zone=$zone/$name/$l{state}";
    } elsif ($name =~ /^metrics_/) {
        $path = "zone=$zone/$name";
    } elsif ($name eq 'balance') {
        $path = "zone=$zone/balance/$l{currency}/$l{type}";
    } elsif ($name =~ /^balance_(?:available|updated_seconds)$/) {
        $path = "zone=$zone/$name";
    } elsif ($name eq 'requests_in_flight') {
        $path = "zone=$zone/$name/$l{endpoint}";
    } else {
        my $key;
        if ($name =~ /^(.*)_(bucket|sum|count)$/ && $HIST{$1}) {
            my ($h, $part, $le) = ($1, $2, delete $l{le});
            if ($part eq 'bucket') {
                my @b = @{ $bounds{$zone}{$h} // [] };
                my ($i) = $le eq '+Inf' ? (scalar @b) : grep { $b[$_] == $le } 0 .. $#b;
                $key = "$h/buckets/" . ($i // 'none');
            } else {
                $key = "$h/$part";
            }
        } elsif ($name eq 'requests_total') {
            $key = "$name/" . delete $l{status};
        } elsif ($name =~ /^(?:errors_total|usage_missing_total)$/) {
            $key = "$name/" . delete $l{reason};
        } elsif ($name eq 'tokens_total') {
            $key = "$name/" . delete $l{type};
        } elsif ($name eq 'cost_total') {
            my $cur = delete $l{currency};
            $key = "$name/value";
            my $cp = "zone=$zone/" . join(',', map { "$_=$l{$_}" } sort keys %l) . "/$name/currency";
            is($json{$cp}, $cur, "JSON: $cp");
            $seen{$cp} = 1;
        } elsif ($name eq 'reasoning_tokens_total' || $name eq 'keepalives_total') {
            $key = $name;
        } else {
            push @unmapped, $s->{line};
            next;
        }
        $path = "zone=$zone/" . join(',', map { "$_=$l{$_}" } sort keys %l) . "/$key";
    }
    $seen{$path} = 1;
    if (!defined $json{$path}) {
        fail("JSON has $path ($s->{name})");
        next;
    }
    ok($json{$path} == $s->{value}, "JSON $path: $json{$path} == $s->{value}");
}
is_deeply(\@unmapped, [], 'every exposition family has its place in the JSON');
# the balance reading and the keep-alives are among what was compared
my ($bal_cny) = grep { m{/balance/CNY/total$} } keys %json;
ok(defined $bal_cny && $json{$bal_cny} == -1.5, 'JSON: balance CNY total -1.5');
my ($bal_usd) = grep { m{/balance/USD/granted$} } keys %json;
ok(defined $bal_usd && $json{$bal_usd} == 0.25, 'JSON: balance USD granted 0.25');
ok((grep { m{/balance_available$} && $json{$_} == 1 } keys %json) == 1, 'JSON: balance_available 1');
ok((grep { m{/keepalives_total$} && $json{$_} > 0 } keys %json) >= 1, 'JSON: keep-alives counted');
my @extra = grep { !$seen{$_} && $json{$_} != 0 } sort keys %json;
is_deeply(\@extra, [], 'every nonzero JSON number is in the exposition');

# a few exact values, so that the comparison above cannot pass on two empty sides
my $za = (grep { $_->{zone} eq 'za' } @{ $j->{zones} })[0];
my $zb = (grep { $_->{zone} eq 'zb' } @{ $j->{zones} })[0];
my @flash = grep { $_->{labels}{model} eq 'deepseek-flash' && $_->{labels}{endpoint} eq 'chat_completions'
                   && $_->{labels}{user} eq '' } @{ $za->{series} };
is(scalar @flash, 1, 'za: one deepseek-flash chat series without user');
is($flash[0]{requests_total}{200}, 7, 'za: 7 deepseek-flash chats with 200');
is($flash[0]{requests_total}{429}, 1, 'za: one 429');
is($flash[0]{errors_total}{rate_limited}, 1, 'za: rate_limited 1');
is($flash[0]{errors_total}{content_filter}, 1, 'za: content_filter 1');
is($flash[0]{usage_missing_total}{absent}, 1, 'za: usage missing absent 1');
is($flash[0]{tokens_total}{output}, 180, 'za: output tokens 6 x 30');
is($flash[0]{cost_total}{currency}, 'U"S\\D', 'za: the currency, escaped for JSON');
is($flash[0]{request_latency_seconds}{count}, 8, 'za: latency count 8');
my @hostile = grep { ($_->{labels}{user} // '') ne '' } @{ $za->{series} };
is(scalar @hostile, 1, 'za: the hostile user label series');
is($hostile[0]{labels}{user}, "a\"b\\c \xc3\xa9 \xef\xbf\xbd", 'za: its label value survives JSON exactly');
is($zb->{metrics_series}{used}, 2, 'zb: 2 series used');
is($zb->{metrics_series}{capacity}, 2, 'zb: capacity 2');
is($zb->{metrics_dropped_total}, 1, 'zb: one dropped observation');
my @ov = grep { $_->{labels}{endpoint} eq '__overflow__' } @{ $zb->{series} };
is($ov[0]{requests_total}{200}, 1, 'zb: the overflow series has the third request');
is_deeply($zb->{buckets}{request_latency_seconds}, [0.05, 0.5, 5], 'zb: its bucket bounds');
is($za->{requests_in_flight}{chat_completions}, 0, 'za: no chat in flight');
is($za->{requests_in_flight}{models}, 1, 'za: the models request in flight');
ok(abs($j->{time} - time) < 60, 'JSON: time is now');
like($jr->{body}, qr/"time":\d+\.\d{3},/, 'JSON: time with milliseconds');

# one zone: the same JSON shape, the zone's name, no other zone
my $ja = JSON::PP->new->decode(get('/a', Accept => 'application/json')->{body});
is_deeply([map { $_->{zone} } @{ $ja->{zones} }], ['za'], '/a: only za');

waitpid($slow, 0);

# ---------------------------------------------------------------- the page's rates, under node
# two JSON reads with known traffic between them; the page's own script
# (served at ?js) computes each group's rates, as it does in the browser

# PromQL's histogram_quantile over bounds and cumulative counts (+Inf last)
sub histogram_quantile {
    my ($q, $bounds, $cum) = @_;
    my $n = @$cum;
    return 'NaN' unless $cum->[-1] > 0;
    my ($rank, $i) = ($q * $cum->[-1], 0);
    $i++ while $i < $n - 1 && $cum->[$i] < $rank;
    return $bounds->[-1] if $i == $n - 1;
    my ($lo, $below) = $i ? ($bounds->[$i - 1], $cum->[$i - 1]) : (0, 0);
    return $lo + ($bounds->[$i] - $lo) * ($rank - $below) / ($cum->[$i] - $below);
}

# zone/endpoint/model -> histogram -> bucket counts, summed over the group
sub group_hist {
    my ($j) = @_;
    my %g;
    for my $z (@{ $j->{zones} }) {
        for my $s (@{ $z->{series} }) {
            my $k = "$z->{zone}/$s->{labels}{endpoint}/$s->{labels}{model}";
            for my $h (qw(request_latency_seconds time_to_first_token_seconds)) {
                my $b = $s->{$h}{buckets} or next;
                $g{$k}{$h}[$_] += $b->[$_] for 0 .. $#$b;
            }
        }
    }
    return \%g;
}

$t->scrape_settled(path => '/metrics');
my $raw1 = get('/metrics', Accept => 'application/json')->{body};
is($t->chat->{status}, 200, 'between two reads: chat') for 1 .. 3;
is($t->chat(stream => 1, mock => 'delay_ms=70')->{status}, 200, 'between two reads: a slower stream');
is($t->chat(mock => 'status=429')->{status}, 429, 'between two reads: a 429');
is($t->chat(model => 'deepseek-reasoner', stream => 1)->{status}, 200, 'between two reads: reasoner') for 1 .. 2;
$t->scrape_settled(path => '/metrics');
my $raw2 = get('/metrics', Accept => 'application/json')->{body};
$t->write_file('page.js', get('/metrics?js')->{body});
$t->write_file('j1.json', $raw1);
$t->write_file('j2.json', $raw2);
$t->write_file('rates.js', <<'JS');
const fs = require('fs'), dir = process.argv[2], m = { exports: {} };
new Function('module', fs.readFileSync(dir + '/page.js', 'utf8'))(m);
const [j1, j2] = ['j1', 'j2'].map(f => JSON.parse(fs.readFileSync(dir + '/' + f + '.json', 'utf8')));
const dt = j2.time - j1.time, out = {};
j2.zones.forEach((z, i) => {
  const old = {};
  m.exports.groups(j1.zones[i]).forEach(g => { old[g.key] = g; });
  m.exports.groups(z).forEach(g => {
    out[z.zone + '/' + g.endpoint + '/' + g.model] = m.exports.rate(z, g, old[g.key], dt);
  });
});
console.log(JSON.stringify({ dt: dt, rates: out },
                           (k, v) => typeof v === 'number' && !isFinite(v) ? 'NaN' : v));
JS
my $node = $ENV{DSM_NODE} // 'node';
my $res = `$node @{[ $t->prefix ]}/rates.js @{[ $t->prefix ]}`;
my $pr = eval { JSON::PP->new->decode($res) };
ok($pr, 'the page script ran under node') or diag $res;
$pr //= { rates => {}, dt => 0 };
my ($j1, $j2) = map { JSON::PP->new->decode($_) } $raw1, $raw2;
my $dt = $j2->{time} - $j1->{time};
ok($dt > 0, "two reads $dt s apart");
my ($h1, $h2) = (group_hist($j1), group_hist($j2));
my $zbounds = (grep { $_->{zone} eq 'za' } @{ $j2->{zones} })[0]{buckets};

# [group, requests, errors, hit, miss, output tokens, cost in USD-like units] between the reads
for my $c (['za/chat_completions/deepseek-flash', 5, 1, 32, 48, 120, 4 * (8 * 0.07 + 12 * 0.27 + 30 * 1.1) / 1e6],
           ['za/chat_completions/deepseek-reasoner', 2, 0, 16, 24, 60, 0]) {
    my ($k, $req, $err, $hit, $miss, $out, $cost) = @$c;
    my $r = $pr->{rates}{$k} // {};
    my $near = sub { my ($got, $want, $what) = @_;
        ok(defined $got && $got ne 'NaN' && abs($got - $want) <= 1e-9 * (1 + abs $want), "page rate $k: $what")
            or diag "got " . ($got // 'undef') . ", want $want" };
    $near->($r->{requests}, $req / $dt, "requests/s = $req / dt");
    $near->($r->{error_ratio}, $err / $req, "error ratio $err/$req");
    $near->($r->{input_cache_hit}, $hit / $dt, "input_cache_hit/s = $hit / dt");
    $near->($r->{input_cache_miss}, $miss / $dt, "input_cache_miss/s = $miss / dt");
    $near->($r->{output}, $out / $dt, "output/s = $out / dt");
    $near->($r->{cost}, $cost / $dt * 3600, 'cost per hour');
    for my $q (['lat', 'request_latency_seconds'], ['ttft', 'time_to_first_token_seconds']) {
        my ($a, $b) = ($h1->{$k}{ $q->[1] } // [], $h2->{$k}{ $q->[1] });
        my @d = map { $b->[$_] - ($a->[$_] // 0) } 0 .. $#$b;
        for my $p (0.5, 0.99) {
            my $want = histogram_quantile($p, $zbounds->{ $q->[1] }, \@d);
            my $got = $r->{ $q->[0] . $p * 100 };
            if ($want eq 'NaN') { is($got, 'NaN', "page rate $k: $q->[0] p" . $p * 100 . ' none') }
            else { $near->($got, $want, "$q->[0] p" . $p * 100 . " of the interval = $want") }
        }
    }
}

# the balance line, when the JSON has a balance (tolerant of its shape and of its absence)
$t->write_file('balance.js', <<'JS');
const fs = require('fs'), m = { exports: {} };
new Function('module', fs.readFileSync(process.argv[2] + '/page.js', 'utf8'))(m);
const b = m.exports.balance;
console.log(JSON.stringify([
  b({ balance: { CNY: { total: 110, granted: 10, topped_up: 100 } }, balance_available: 1 }),
  b({ balance: [{ currency: 'CNY', type: 'total', value: 110 }, { currency: 'CNY', type: 'granted', value: 10 },
                { currency: 'CNY', type: 'topped_up', value: 100 }], balance_available: 0 }),
  b({}), b({ balance: 'x' })]));
JS
my $bal = eval { JSON::PP->new->decode(scalar `$node @{[ $t->prefix ]}/balance.js @{[ $t->prefix ]}`) } // [];
is_deeply($bal, ['110.00 CNY (granted 10.00, topped up 100.00)',
                 '110.00 CNY (granted 10.00, topped up 100.00); not available', undef, undef],
          'page: the balance line from either shape, none without one');

$t->stop;
done_testing;
