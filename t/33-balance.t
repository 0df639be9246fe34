#!/usr/bin/perl
# Issue 11, section 3 "Balance": responses of GET /user/balance going through a
# counted location set deepseek_balance{zone,currency,type},
# deepseek_balance_available{zone} and deepseek_balance_updated_seconds{zone}
# (the fake wall clock of the reading, exact to the millisecond). Each case
# below runs in order against the same zone and states the whole balance
# afterwards: a valid reading replaces the previous one (a currency it lacks
# is no longer shown); a hostile body (not JSON, wrong types, missing fields,
# too deep, too big, truncated, compressed) changes nothing and is counted
# once in deepseek_usage_missing_total{endpoint="user_balance",reason=...}.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MIME::Base64 qw(encode_base64);
use Time::Local ();
use DSM::Test;

plan(skip_all => "libfaketime not installed ($DSM::Test::FAKETIME_LIB; apt-get install faketime)")
    unless DSM::Test::has_faketime();

my $t = DSM::Test->new(workers => 1);
$t->mock_start;
$t->set_clock('2026-12-07 01:00:00');

$t->write_conf(<<'EOF');
%%MODULE%%
%%COMMON%%
%%FAKETIME%%
http {
    deepseek_metrics_zone bal:1m;
    deepseek_metrics_zone other:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics bal;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
        location /other/ {
            deepseek_metrics other;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
$t->start;

# a whole 200 response with this body, sent by the mock as it is
sub raw {
    my ($body, %h) = @_;
    my $len = $h{len} // length $body;
    my $head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: $len\r\n";
    $head .= "Content-Encoding: $h{ce}\r\n" if $h{ce};
    return 'raw=' . encode_base64("$head\r\n$body", '');
}

sub info { my ($c, $t, $g, $u) = @_; return qq({"currency":"$c","total_balance":$t,"granted_balance":$g,"topped_up_balance":$u}) }
sub doc { my ($avail, @infos) = @_; return qq({"is_available":$avail,"balance_infos":[) . join(',', @infos) . ']}' }

# a valid reading but for one member nested 20 deep
my $deep = '{"is_available":true,"balance_infos":[' . info('CNY', '"1"', '"1"', '"1"') . '],"x":'
    . ('{"a":' x 19) . '1' . ('}' x 20);
my $five = doc('true', map { info("C$_", '"1.00"', '"0.00"', '"1.00"') } 1 .. 5);

# name, X-Mock, expected balance after it: { CUR => [total, granted, topped_up] },
# available, missing reason counted (or undef); the clock of the reading
my @CASES = (
    [ 'the mock default (DeepSeek\'s example)', '',
      { CNY => [ '110.000000', '10.000000', '100.000000' ] }, 1, undef, '2026-12-07 01:00:00' ],
    [ 'amounts set, not available', 'balance_total=0.50;balance_granted=0.50;balance_topped_up=0.00;balance_available=0',
      { CNY => [ '0.500000', '0.500000', '0.000000' ] }, 0, undef, '2026-12-07 01:00:05' ],
    [ 'two currencies', 'balance_extra=USD:15.25:0.00:15.25',
      { CNY => [ '110.000000', '10.000000', '100.000000' ], USD => [ '15.250000', '0.000000', '15.250000' ] }, 1, undef,
      '2026-12-07 01:00:06' ],
    [ 'USD alone: CNY is no longer shown', 'balance_currency=USD;balance_total=-1.5;balance_granted=0;balance_topped_up=-1.5',
      { USD => [ '-1.500000', '0.000000', '-1.500000' ] }, 1, undef, '2026-12-07 01:00:07' ],
    [ 'decimals past the sixth are dropped', 'balance_total=1.23456789;balance_granted=0.0000009;balance_topped_up=1.234567',
      { CNY => [ '1.234567', '0.000000', '1.234567' ] }, 1, undef, '2026-12-07 01:00:08' ],
    [ 'amounts as JSON numbers are read', raw(doc('true', info('CNY', '12.5', '0', '12.5'))),
      { CNY => [ '12.500000', '0.000000', '12.500000' ] }, 1, undef, '2026-12-07 01:00:09' ],
    [ 'no balance_infos at all', 'balance_empty=1;balance_available=0', {}, 0, undef, '2026-12-07 01:00:10' ],
    # CNY and USD hold two of the zone's four currency slots for good
    [ 'five currencies: two more slots, the rest not shown', raw($five),
      { C1 => [ '1.000000', '0.000000', '1.000000' ], C2 => [ '1.000000', '0.000000', '1.000000' ] }, 1, undef,
      '2026-12-07 01:00:11' ],
    [ 'back to CNY', 'balance_total=7.00',
      { CNY => [ '7.000000', '10.000000', '100.000000' ] }, 1, undef, '2026-12-07 01:00:12' ],
    # hostile bodies: nothing changes, one missing count each
    [ 'HTML', raw('<html>502</html>'), undef, 1, 'invalid_json', '2026-12-07 01:01:00' ],
    [ 'garbage after the document', raw(doc('true', info('CNY', '"1"', '"1"', '"1"')) . ' x'), undef, 1, 'invalid_json',
      '2026-12-07 01:01:01' ],
    [ 'a control byte in a string', raw(qq({"is_available":true,"x":"a\x01b","balance_infos":[]})), undef, 1,
      'invalid_json', '2026-12-07 01:01:02' ],
    [ 'is_available a string', raw(qq({"is_available":"yes","balance_infos":[]})), undef, 1, 'invalid_balance',
      '2026-12-07 01:01:03' ],
    # the first problem decides: a bad value, then a syntax error, in one buffer
    [ 'is_available a string, then not JSON', raw(qq({"is_available":"yes"::})), undef, 1, 'invalid_balance',
      '2026-12-07 01:01:03' ],
    [ 'is_available missing', raw(qq({"balance_infos":[]})), undef, 1, 'invalid_balance', '2026-12-07 01:01:04' ],
    [ 'balance_infos an object', raw(qq({"is_available":true,"balance_infos":{}})), undef, 1, 'invalid_balance',
      '2026-12-07 01:01:05' ],
    [ 'an amount true', raw(doc('true', info('CNY', 'true', '"1"', '"1"'))), undef, 1, 'invalid_balance',
      '2026-12-07 01:01:06' ],
    [ 'an amount with an exponent', raw(doc('true', info('CNY', '"1e5"', '"1"', '"1"'))), undef, 1, 'invalid_balance',
      '2026-12-07 01:01:07' ],
    [ 'an amount of 13 integer digits', raw(doc('true', info('CNY', '"1000000000000"', '"1"', '"1"'))), undef, 1,
      'invalid_balance', '2026-12-07 01:01:08' ],
    [ 'granted_balance missing', raw(qq({"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"1","topped_up_balance":"1"}]})),
      undef, 1, 'invalid_balance', '2026-12-07 01:01:09' ],
    [ 'a currency with a quote', raw(doc('true', info('C\\"Y', '"1"', '"1"', '"1"'))), undef, 1, 'invalid_balance',
      '2026-12-07 01:01:10' ],
    [ 'a currency of 9 bytes', raw(doc('true', info('ABCDEFGHI', '"1"', '"1"', '"1"'))), undef, 1, 'invalid_balance',
      '2026-12-07 01:01:11' ],
    [ 'nested 20 deep', raw($deep), undef, 1, 'invalid_balance', '2026-12-07 01:01:12' ],
    [ 'a 100 KB document', 'balance_pad=100000', undef, 1,
      'invalid_balance', '2026-12-07 01:01:13' ],
    [ 'cut in the middle', raw(substr(doc('true', info('CNY', '"1"', '"1"', '"1"')), 0, 30), len => 200), undef, 1,
      'truncated', '2026-12-07 01:01:14' ],
    [ 'compressed', raw("\x1f\x8b\x08\x00rest", ce => 'gzip'), undef, 1, 'compressed', '2026-12-07 01:01:15' ],
);

# before any reading the balance families are absent, not 0
{
    my $m = $t->scrape_settled(accept => 'openmetrics');
    is($m->type($_), undef, "no reading yet: no $_ family")
        for qw(deepseek_balance deepseek_balance_available deepseek_balance_updated_seconds);
}

my %missing;
my ($last_balance, $last_avail, $last_time) = ({}, undef, undef);

for my $c (@CASES) {
    my ($name, $mock, $balance, $avail, $reason, $clock) = @$c;
    $t->set_clock($clock);
    my $r = $t->http(GET => '/user/balance', mock => $mock);
    is($r->{status}, 200, "$name: 200");
    $missing{$reason}++ if $reason;
    if ($balance) {
        ($last_balance, $last_avail, $last_time) = ($balance, $avail, $clock);
    }

    my $m = $t->scrape_settled;
    # the exact text of each sample: amounts are printed with 6 decimals
    my @got = sort map { /^deepseek_balance\{zone="bal",currency="([^"]*)",type="([^"]*)"\} (\S+)$/ ? "$1/$2=$3" : () }
              split /\n/, $m->raw;
    is(scalar(@got), $m->count('deepseek_balance', { zone => 'bal' }), "$name: every sample's text read");
    my @want = sort map { my $cur = $_; my @v = @{ $last_balance->{$cur} };
                          ("$cur/total=$v[0]", "$cur/granted=$v[1]", "$cur/topped_up=$v[2]") } keys %$last_balance;
    is_deeply(\@got, \@want, "$name: deepseek_balance, exact text") or diag explain \@got;
    is($m->value('deepseek_balance_available', { zone => 'bal' }), $last_avail, "$name: available");
    my ($updated) = $m->raw =~ /^deepseek_balance_updated_seconds\{zone="bal"\} (\S+)$/m;
    is($updated, utc($last_time) . '.000', "$name: updated at the reading's clock");
    is($m->value('deepseek_usage_missing_total', { endpoint => 'user_balance', reason => $_ }), $missing{$_},
       "$name: usage missing $_") for sort keys %missing;
    is($m->value('deepseek_usage_missing_total', { endpoint => 'user_balance' }), scalar(map { (1) x $_ } values %missing),
       "$name: no other missing reason");
    is($m->count('deepseek_balance', { zone => 'other' }), 0, "$name: the other zone has no balance");
}

# a balance error status is not a reading and not a missing usage
{
    my $r = $t->http(GET => '/user/balance', mock => 'status=401');
    is($r->{status}, 401, 'a 401 from /user/balance');
    my $m = $t->scrape_settled;
    is($m->value('deepseek_usage_missing_total', { endpoint => 'user_balance' }), 17, 'a 401 counts no missing usage');
    is($m->value('deepseek_balance', { zone => 'bal', currency => 'CNY', type => 'total' }), 7, 'and changes no balance');
}

# the other zone reads its own, with the same families; HELP/TYPE once each
{
    $t->set_clock('2026-12-07 02:00:00');
    my $r = $t->http(GET => '/other/user/balance', mock => 'balance_currency=USD;balance_total=3');
    is($r->{status}, 200, 'balance through the other zone');
    my $m = $t->scrape_settled(accept => 'openmetrics');
    is($m->value('deepseek_balance', { zone => 'other', currency => 'USD', type => 'total' }), 3, 'other zone: USD total');
    is($m->value('deepseek_balance', { zone => 'bal', currency => 'CNY', type => 'total' }), 7, 'bal zone unchanged');
    is($m->type('deepseek_balance'), 'gauge', 'deepseek_balance is a gauge');
    is($m->value('deepseek_balance_updated_seconds', { zone => 'other' }), utc('2026-12-07 02:00:00'),
       'other zone: its own reading time');
}

$t->stop;
done_testing;

sub utc {
    my ($ts) = @_;
    my ($y, $mo, $d, $h, $mi, $s) = $ts =~ /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)$/;
    return Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y);
}
