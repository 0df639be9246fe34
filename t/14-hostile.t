#!/usr/bin/perl
# Hostile label values: user labels (deepseek_metrics_label) and the endpoint override
# (deepseek_metrics_endpoint) fed from variables the client controls - a regex capture of
# the decoded URI ($v: %22 %5C %0A %FF decode there), a request header ($http_x_label) and
# the raw query ($arg_v) - plus odd model names from the upstream response. Whatever the
# input, both exposition formats parse strictly, `promtool check metrics` is clean, and
# every value round-trips: parsed value == input cut at 255 bytes, each byte that is not
# part of a valid UTF-8 sequence replaced by U+FFFD.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;
use DSM::Metrics;

my $FFFD = "\xef\xbf\xbd";

# the expected label value (bytes) for a raw input (bytes): cut at 255 bytes, then every
# byte that does not start a well-formed UTF-8 sequence (RFC 3629) becomes U+FFFD
sub expect_value {
    my ($raw) = @_;
    my $v = substr($raw, 0, 255);
    my $out = '';
    while (length $v) {
        if ($v =~ s/^[\x00-\x09\x0b-\x1f]//) {
            # control bytes other than LF: replaced by the module
            $out .= $FFFD;
        } elsif ($v =~ s/^([\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}
                      |\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}
                      |\xf4[\x80-\x8f][\x80-\xbf]{2})//x) {
            $out .= $1;
        } else {
            substr($v, 0, 1, '');
            $out .= $FFFD;
        }
    }
    return $out;
}

sub pct { my ($s) = @_; $s =~ s/([^A-Za-z0-9_~-])/sprintf('%%%02X', ord $1)/ge; $s }
sub show { my ($s) = @_; $s = substr($s, 0, 40) . '...(' . length($s) . ')' if length $s > 48;
           $s =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge; $s }

# sanity of the expectation itself (so a wrong helper cannot make the test vacuous)
is(expect_value("a\xffb"), "a${FFFD}b", 'helper: invalid byte replaced');
is(expect_value("\xe6\xa8\xa1"), "\xe6\xa8\xa1", 'helper: valid 3-byte kept');
is(expect_value(('a' x 254) . "\xc3\xa9"), ('a' x 254) . $FFFD, 'helper: cut inside a 2-byte character');
is(length(expect_value('x' x 9000)), 255, 'helper: cut at 255');
is(expect_value("a\rb\tc\nd"), "a${FFFD}b${FFFD}c\nd", 'helper: CR and TAB replaced, LF kept');

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
http {
    large_client_header_buffers 4 64k;

    deepseek_metrics_zone h:8m;
    deepseek_metrics_zone ep:2m;
    deepseek_metrics_zone cr:1m;

    deepseek_metrics_models deepseek-flash "we\"ird\\mo{d}=el,x" "模型-ü" "line\nbreak" 'sp ace' "tab\\tx";

    server {
        listen 127.0.0.1:%%PORT%%;

        # user labels from a decoded-URI capture, a header and the raw query
        location ~ "(?s)^/x/(?<v>.*)/chat/completions$" {
            deepseek_metrics h;
            deepseek_metrics_label id $http_x_id;
            deepseek_metrics_label v $v;
            deepseek_metrics_label hdr $http_x_label;
            deepseek_metrics_label arg $arg_v;
            deepseek_metrics_label mix "pre\"$v\\post";
            # a fixed upstream URI (a variable makes that legal in a regex location):
            # neither the hostile path nor the raw query reach the mock
            set $none "";
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/chat/completions$none;
            proxy_set_header Accept-Encoding "";
            proxy_set_header X-Label "";
        }

        # the endpoint label from a decoded-URI capture
        location ~ "(?s)^/e/(?<ev>.*)$" {
            deepseek_metrics ep;
            deepseek_metrics_endpoint $ev;
            deepseek_metrics_label id $http_x_id;
            return 204;
        }

        # carriage returns (valid raw in both formats, but awkward): a zone of their own
        location ~ "(?s)^/cr/(?<c>.*)$" {
            deepseek_metrics cr;
            deepseek_metrics_label v $c;
            return 204;
        }

        # model names from the upstream's response
        location /m/ {
            deepseek_metrics h;
            deepseek_metrics_label id $http_x_id;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_set_header Accept-Encoding "";
        }
    }

    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export h ep; }
        location = /h       { deepseek_metrics_export h; }
        location = /cr      { deepseek_metrics_export cr; }
    }
}
EOF

my ($code, $out) = $t->nginx_t;
is($code, 0, 'nginx -t') or diag $out;
$t->start;

# ------------------------------------------------------------------ inputs

my @v = (
    'a"b', 'a\b', "a\nb", '\"', 'x\\', "\n", qq["} 1\nfake_metric{x="], '",zz="1', "\xff\xfe",
    "\xed\xa0\x80", "\xc0\xaf", "\xf5\x80\x80\x80", "\xe6\x97", "\xc3", "模型 ü €", 'x' x 8192,
    ('a' x 254) . "é", ('a' x 253) . "模", '"' x 300, '\\' x 300, "\n" x 300, "a\tb\x01c\x7f",
    '%41%0A', ('b' x 250) . "\xff\xff\xff\xff\xff\xff", "\xf0\x9f\x98\x80",
);
my @hdr = ('a"b\\c', "\xff\xfe", 'h' x 8192, undef, "\xe6\x97", "ü\"\\", ('q' x 254) . "\xe2\x82\xac", '"' x 400);
my @arg = ('a"b\\c', '%22%0A', 'y' x 8000, '', "\xff", "é'\"");

my @cases;
for my $i (0 .. $#v) {
    push @cases, { id => "v$i", v => $v[$i], hdr => $hdr[$i % @hdr], arg => $arg[$i % @arg] };
}

for my $c (@cases) {
    my $path = '/x/' . pct($c->{v}) . '/chat/completions' . (length $c->{arg} ? "?v=$c->{arg}" : '');
    my %h = ('X-Id' => $c->{id});
    $h{'X-Label'} = $c->{hdr} if defined $c->{hdr};
    my $r = $t->chat(path => $path, headers => \%h);
    is($r->{status}, 200, "label case $c->{id} (v=" . show($c->{v}) . '): 200') or diag substr($r->{raw}, 0, 300);
}

# endpoint overrides
my @ep = ('a"b', 'a\b', "a\nb", "\xff\xfe", 'e' x 8192, ('a' x 254) . "é", '"' x 300, "模型", '"} 1' . "\nx{",
          "\n" x 300, 'chat_completions', '__overflow__', 'other', "\xed\xa0\x80");
for my $i (0 .. $#ep) {
    my $r = $t->http(GET => '/e/' . pct($ep[$i]), headers => { 'X-Id' => "e$i" });
    is($r->{status}, 204, "endpoint case e$i (" . show($ep[$i]) . '): 204');
}

# model names from the upstream (JSON and SSE); the allowlist has odd names too
my @models = (
    [ 'we"ird\\mo{d}=el,x', 'we"ird\\mo{d}=el,x' ],
    [ '模型-ü',             '模型-ü' ],
    [ "line\nbreak",        "line\nbreak" ],
    [ 'sp ace',             'sp ace' ],
    [ 'not"listed\\',       'other' ],
    [ "\x{7f}ctl\x{01}",    'other' ],
    [ 'm' x 300,            'other' ],
    [ 'deepseek-flash',     'deepseek-flash' ],
    # sent as "tab\tx": the raw JSON bytes equal the allowlisted name
    # tab\tx, the decoded value (a TAB) does not
    [ "tab\tx",            'other' ],
);
my $mi = 0;
for my $mc (@models) {
    my ($served, $want) = @$mc;
    for my $stream (0, 1) {
        my $id = "m$mi" . ($stream ? 's' : 'j');
        my $r = $t->chat(path => '/m/chat/completions', stream => $stream, headers => { 'X-Id' => $id },
                         mock => 'model=' . pct($served));
        is($r->{status}, 200, "model case $id (" . show($served) . '): 200');
        $mc->[2 + $stream] = $id;
    }
    $mi++;
}

# CR cases (own zone)
my @cr = ("a\rb", "\r\n", "\r" x 300);
for my $i (0 .. $#cr) {
    is($t->http(GET => '/cr/' . pct($cr[$i]))->{status}, 204, "CR case $i: 204");
}

# ------------------------------------------------------------------ wait for the log phase

{
    my $deadline = time + 5;
    while (time < $deadline) {
        my $m = eval { $t->scrape(path => '/h') } or last;
        last if $m->value('deepseek_requests_in_flight') == 0;
        select(undef, undef, undef, 0.05);
    }
}

# ------------------------------------------------------------------ scrapes

my %scr;
for my $fmt ('text', 'openmetrics') {
    my $m = eval { $t->scrape(path => '/metrics', accept => $fmt) };
    ok($m, "$fmt: the scrape parses strictly") or diag $@;
    $scr{$fmt} = $m;
}
my $raw_text = $scr{text} ? $scr{text}->raw : $t->http(GET => '/metrics', port => $t->port('METRICS_PORT'))->{body};
my ($pc, $pout) = $t->promtool_check($raw_text);
is($pc, 0, 'promtool check metrics: exit 0') or diag $pout;
is($pout, '', 'promtool check metrics: no findings') or diag $pout;

for my $fmt ('text', 'openmetrics') {
    my $m = $scr{$fmt} or next;
    my @f = $m->families;
    is(scalar(grep { !/^deepseek_/ } @f), 0, "$fmt: no injected families") or diag "@f";
    is($m->count('fake_metric'), 0, "$fmt: no injected sample");
    is(scalar(grep { $_->{labels}{zz} } $m->all_samples), 0, "$fmt: no injected label");

    # user labels
    for my $c (@cases) {
        my @s = $m->samples('deepseek_requests_total', { id => $c->{id} });
        is(scalar @s, 1, "$fmt $c->{id}: one requests_total series") or next;
        my $l = $s[0]{labels};
        is($s[0]{value}, 1, "$fmt $c->{id}: counted once");
        is($l->{endpoint}, 'chat_completions', "$fmt $c->{id}: endpoint");
        is($l->{zone}, 'h', "$fmt $c->{id}: zone");
        is(show($l->{v}), show(expect_value($c->{v})), "$fmt $c->{id}: v round-trips (" . show($c->{v}) . ')');
        is(show($l->{hdr}), show(expect_value($c->{hdr} // '')), "$fmt $c->{id}: hdr round-trips");
        is(show($l->{arg}), show(expect_value($c->{arg})), "$fmt $c->{id}: arg round-trips (raw query)");
        is(show($l->{mix}), show(expect_value("pre\"$c->{v}\\post")), "$fmt $c->{id}: mixed literal+variable value");
        is(join(',', sort keys %$l), 'arg,endpoint,hdr,id,mix,model,status,v,zone', "$fmt $c->{id}: exactly the labels");
        is($m->value('deepseek_request_latency_seconds_count', { id => $c->{id} }), 1, "$fmt $c->{id}: histogram too");
        is($m->value('deepseek_tokens_total', { id => $c->{id}, type => 'output' }), 30, "$fmt $c->{id}: tokens too");
    }

    # endpoint overrides
    for my $i (0 .. $#ep) {
        my @s = $m->samples('deepseek_requests_total', { id => "e$i" });
        is(scalar @s, 1, "$fmt e$i: one series") or next;
        my $want = expect_value($ep[$i]);
        is(show($s[0]{labels}{endpoint}), show($want), "$fmt e$i: endpoint round-trips (" . show($ep[$i]) . ')');
        is($s[0]{labels}{status}, '204', "$fmt e$i: status");
        is($m->count('deepseek_requests_in_flight', { zone => 'ep', endpoint => $want }), 1,
           "$fmt e$i: the in-flight gauge has the same endpoint value");
    }
    # the override 'chat_completions' shares the in-flight row of the built-in endpoint: no duplicates
    my %seen;
    my @dups = grep { $seen{ $_->{labels}{zone} . "\0" . $_->{labels}{endpoint} }++ } $m->samples('deepseek_requests_in_flight');
    is(scalar @dups, 0, "$fmt: no duplicate in-flight rows");
    is($m->value('deepseek_requests_total', { zone => 'ep' }), scalar @ep, "$fmt: every endpoint request counted");

    # models
    for my $mc (@models) {
        my ($served, $want, $idj, $ids) = @$mc;
        for my $id ($idj, $ids) {
            my @s = $m->samples('deepseek_requests_total', { id => $id });
            is(scalar @s, 1, "$fmt $id: one series") or next;
            is(show($s[0]{labels}{model}), show($want), "$fmt $id: model " . show($served) . ' -> ' . show($want));
        }
    }
}

# both formats carry the same values
if ($scr{text} && $scr{openmetrics}) {
    my $key = sub { my ($x) = @_; join("\0", $x->{name}, map { "$_=$x->{labels}{$_}" } sort keys %{ $x->{labels} }) . " $x->{value}" };
    my %a = map { $key->($_) => 1 } $scr{text}->samples('deepseek_requests_total');
    my %b = map { $key->($_) => 1 } $scr{openmetrics}->samples('deepseek_requests_total');
    ok(keys %a > 40, 'many requests_total series');
    is_deeply([ sort keys %b ], [ sort keys %a ], 'text and OpenMetrics: the same requests_total series');
}

# ------------------------------------------------------------------ carriage returns

{
    my $r = $t->http(GET => '/cr', port => $t->port('METRICS_PORT'));
    is($r->{status}, 200, 'CR zone scrape: 200');
    my ($c2, $o2) = $t->promtool_check($r->{body});
    is($c2, 0, 'CR zone: promtool check metrics exit 0') or diag $o2;
    # without the strict parser: the v values, unescaped, are exactly the inputs
    my %lv;
    for my $line (split /\n/, $r->{body}) {
        next unless $line =~ /^deepseek_requests_total\{.*\bv="((?:[^"\\]|\\.)*)"/;
        (my $val = $1) =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
        $lv{$val}++;
    }
    is_deeply([ sort map { show($_) } keys %lv ], [ sort map { show(expect_value($_)) } @cr ], 'CR zone: the values round-trip');
    for my $fmt ('text', 'openmetrics') {
        my $m = eval { $t->scrape(path => '/cr', accept => $fmt) };
        # the module replaces CR (and other control bytes but LF) with U+FFFD
        ok($m, "CR zone ($fmt): parses strictly") or diag $@;
        next unless $m;
        for my $i (0 .. $#cr) {
            is($m->count('deepseek_requests_total', { v => expect_value($cr[$i]) }), 1, "CR zone ($fmt): case $i round-trips");
        }
    }
}

$t->stop;
done_testing;
