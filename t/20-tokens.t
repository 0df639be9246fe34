#!/usr/bin/perl
# Issue 3, "Must show": token counters exact over hundreds of mixed streaming /
# non-streaming requests with varied usage; the model label (response, request
# body, allowlist -> other, nothing -> unknown); cost equal to a hand computation
# in integer 1e-12 units, across a peak/off-peak boundary and on a configured
# holiday; the $deepseek_* access-log variables per request.
#
# Three nginx instances (each with its own mock):
#   main - 2 workers, prices for deepseek-flash and deepseek-v4-pro, no schedule
#          (every request is peak); 300 mixed requests over chat / FIM / Anthropic.
#   peak - deepseek_metrics_peak_hours 10:00-11:00 (+05:45) on a fake wall clock:
#          requests in the last second of the range and in the first one after.
#   hol  - peak all day every day, but today's date (in the schedule's
#          utc_offset, chosen so that it differs from the UTC date) is a
#          holiday: every request is off-peak.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP ();
use DSM::Test;

my $JSON = JSON::PP->new->canonical;

# ------------------------------------------------------------------ prices (USD per 1M tokens)
my %PRICE = (
    'deepseek-flash'  => { hit => '0.006', miss => '0.30', output => '1.20',
                           offpeak_hit => '0.003', offpeak_miss => '0.15', offpeak_output => '0.60' },
    'deepseek-v4-pro' => { hit => '0.044', miss => '1.32', output => '3.96',
                           offpeak_hit => '0.022', offpeak_miss => '0.66', offpeak_output => '1.98' },
);
my $PRICE_CONF = join '', map {
    my $p = $PRICE{$_};
    "    deepseek_metrics_price $_ USD " . join(' ', map { "$_=$p->{$_}" }
        qw(hit miss output offpeak_hit offpeak_miss offpeak_output)) . ";\n"
} sort keys %PRICE;

# a decimal string with <= 12 decimals -> integer in 1e-12 units (no floats)
sub dec_units {
    my ($s, $scale) = @_;
    $scale //= 12;
    $s =~ /^(\d+)(?:\.(\d+))?$/ or die "not a decimal: $s";
    my ($i, $f) = ($1, $2 // '');
    die "too many decimals: $s" if length $f > $scale;
    $f .= '0' x ($scale - length $f);
    return $i * (10 ** $scale) + ($f eq '' ? 0 : $f + 0);
}
# price per 1M tokens with <= 6 decimals == 1e-12 units per token
sub rate { my ($model, $type, $offpeak) = @_; return dec_units($PRICE{$model}{($offpeak ? 'offpeak_' : '') . $type}, 6) }
sub cost_units {
    my ($model, $u, $offpeak) = @_;
    return $u->{hit} * rate($model, 'hit', $offpeak) + $u->{miss} * rate($model, 'miss', $offpeak)
         + $u->{out} * rate($model, 'output', $offpeak);
}
sub fmt9 { my ($units) = @_; my $n = int($units / 1000); return sprintf('%d.%09d', int($n / 1e9), $n % 1_000_000_000) }

# the exact value text of a sample (not the float) from the raw exposition
sub raw_value {
    my ($m, $sample) = @_;
    my @lines = split /\n/, $m->raw;
    my $line = $lines[$sample->{line} - 1];
    $line =~ /\s(\S+)$/ or die "no value in $line";
    return $1;
}

sub conf {
    my ($extra, $log) = @_;
    return <<"EOF";
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:4m;
$PRICE_CONF$extra
    log_format dsm '\$http_x_req_id|\$status|\$deepseek_endpoint|\$deepseek_model|\$deepseek_prompt_tokens|\$deepseek_completion_tokens|\$deepseek_total_tokens|\$deepseek_cache_hit_tokens|\$deepseek_cache_miss_tokens|\$deepseek_reasoning_tokens|\$deepseek_finish_reason|\$deepseek_cost';
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            deepseek_metrics deepseek;
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_set_header Accept-Encoding "";
            access_log %%PREFIX%%/logs/dsm.log dsm;
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export; }
    }
}
EOF
}

sub read_dsm_log {
    my ($t) = @_;
    my %by;
    for (split /\n/, $t->read_log('dsm.log')) {
        my @f = split /\|/, $_, -1;
        $by{$f[0]} = \@f;
    }
    return \%by;
}

# ------------------------------------------------------------------ instances
my $main = DSM::Test->new(workers => 2);
$main->mock_start;
$main->write_conf(conf(''));
$main->start;

# peak instance: utc_offset=+05:45, peak 10:00-11:00 local every day, on a fake
# wall clock (libfaketime, this nginx only): the "before" requests are sent at
# 10:59:59 local, the "after" ones at 11:00:00, the first second off-peak. No
# waiting for a real boundary, and nothing depends on how loaded the machine is.
my $range = '10:00-11:00';
my ($BEFORE, $AFTER) = ('2026-12-07 05:14:59', '2026-12-07 05:15:00');   # UTC
my $peak = DSM::Test->new(workers => 1);
$peak->mock_start;
$peak->write_conf("%%FAKETIME%%\n" . conf("    deepseek_metrics_peak_hours utc_offset=+05:45 days=sun-sat $range;\n"));
$peak->set_clock($BEFORE);
$peak->start;

# holiday instance: an offset whose local date differs from the UTC date now, at
# least 10 minutes from local midnight; that local date is a holiday.
my @g = gmtime(time);
my $utc_min = $g[2] * 60 + $g[1];
my ($off_c_str, $off_c) = $utc_min >= 10 * 60 + 10 ? ('+14:00', 14 * 3600) : ('-12:00', -12 * 3600);
my @lc = gmtime(time + $off_c);
my $holiday = sprintf('%04d-%02d-%02d', $lc[5] + 1900, $lc[4] + 1, $lc[3]);
my $utc_date = sprintf('%04d-%02d-%02d', $g[5] + 1900, $g[4] + 1, $g[3]);
isnt($holiday, $utc_date, "holiday date in utc_offset=$off_c_str ($holiday) differs from the UTC date");
my $hol = DSM::Test->new(workers => 1);
$hol->mock_start;
$hol->write_conf(conf("    deepseek_metrics_peak_hours utc_offset=$off_c_str days=sun-sat 00:00-24:00;\n"
                    . "    deepseek_metrics_holidays 2020-01-01 $holiday;\n"));
$hol->start;

# ------------------------------------------------------------------ peak: before the boundary
my @PEAK_USAGE = ([1000, 300, 500], [123457, 98765, 4321], [7, 0, 1]);
my %peak_exp = (units => 0);
my $rid = 0;
sub pricing_req {
    my ($t, $u, $tag, $model) = @_;
    my ($prompt, $hit, $comp) = @$u;
    my $id = "$tag-" . ++$rid;
    my $stream = $rid % 2;
    my $r = $t->http(POST => '/chat/completions', headers => { 'X-Req-Id' => $id },
        body => $JSON->encode({ model => $model, stream => $stream ? JSON::PP::true : JSON::PP::false, messages => [] }),
        mock => "prompt=$prompt;hit=$hit;completion=$comp;reasoning=0");
    is($r->{status}, 200, "$tag request $id: 200");
    return ($id, { hit => $hit, miss => $prompt - $hit, out => $comp });
}
for my $u (@PEAK_USAGE) {
    my ($id, $x) = pricing_req($peak, $u, 'before', 'deepseek-v4-pro');
    $peak_exp{$id} = cost_units('deepseek-v4-pro', $x, 0);
    $peak_exp{units} += $peak_exp{$id};
}

# holiday instance: always off-peak today
my %hol_exp = (units => 0);
for my $u (@PEAK_USAGE) {
    my ($id, $x) = pricing_req($hol, $u, 'holiday', 'deepseek-flash');
    $hol_exp{$id} = cost_units('deepseek-flash', $x, 1);
    $hol_exp{units} += $hol_exp{$id};
}

# ------------------------------------------------------------------ main: 300 mixed requests
srand(20);
my @REQ_MODELS = qw(deepseek-flash deepseek-v4-pro deepseek-reasoner deepseek-chat deepseek-v4-flash);
my @SERVED_ALT = qw(deepseek-v4-flash deepseek-v4-flash-vision-exp deepseek-flash deepseek-v4-pro);
my (%req, %tok, %cost, %log_exp);
my ($total_sum, $n_ok, $n_err) = (0, 0, 0);
my %ep_of = (chat => 'chat_completions', fim => 'completions', messages => 'messages');
my %allow = map { $_ => 1 } qw(deepseek-flash deepseek-v4-pro deepseek-v4-flash deepseek-v4-flash-vision-exp deepseek-chat deepseek-reasoner);
my %seen_case;
my $N = 300;
my $t0 = time;
for my $i (1 .. $N) {
    my $x = rand;
    my $kind = $x < 0.5 ? 'chat' : $x < 0.7 ? 'fim' : 'messages';
    my $path = $kind eq 'chat' ? (qw(/chat/completions /v1/chat/completions /beta/chat/completions))[int rand 3]
             : $kind eq 'fim'  ? '/beta/completions' : '/anthropic/v1/messages';
    my $stream = rand() < 0.5 ? 1 : 0;
    my $reqm = $REQ_MODELS[int rand @REQ_MODELS];
    my @mock;
    my ($label, $raw);   # expected model label, expected $deepseek_model
    my $y = rand;
    my $case;
    if ($y < 0.60) { $case = 'response'; $label = $raw = $reqm }
    elsif ($y < 0.72) {
        $case = 'served_differs';
        my @alt = grep { $_ ne $reqm } @SERVED_ALT;
        $raw = $label = $alt[int rand @alt];
        push @mock, "model=$raw";
    }
    elsif ($y < 0.80) { $case = 'served_other'; $raw = 'gpt-4o-mini'; $label = 'other'; push @mock, "model=$raw" }
    elsif ($y < 0.88) { $case = 'request_body'; $label = $reqm; $raw = '-'; push @mock, 'no_model=1' }
    elsif ($y < 0.94) { $case = 'request_other'; $reqm = 'llama-3-70b'; $label = 'other'; $raw = '-'; push @mock, 'no_model=1' }
    else { $case = 'unknown'; $reqm = undef; $label = 'unknown'; $raw = '-'; push @mock, 'no_model=1' }
    $seen_case{$case}++;

    my $body = { stream => $stream ? JSON::PP::true : JSON::PP::false };
    $body->{model} = $reqm if defined $reqm;
    if ($kind eq 'chat') { $body->{messages} = [ { role => 'user', content => "q$i \"model\":\"x\"" } ] }
    elsif ($kind eq 'fim') { $body->{prompt} = 'def f('; $body->{suffix} = ')' }
    else { $body->{max_tokens} = 100; $body->{messages} = [ { role => 'user', content => 'hi' } ] }

    # errors (5%): no usage, model from the request body
    if (rand() < 0.05) {
        my $st = (429, 429, 400, 500, 503)[int rand 5];
        $body->{model} = 'deepseek-v4-pro';
        my $r = $main->http(POST => $path, body => $JSON->encode($body), mock => "status=$st",
                            headers => { 'X-Req-Id' => "m$i" });
        is($r->{status}, $st, "request $i: error $st") or next;
        $req{ $ep_of{$kind} }{'deepseek-v4-pro'}{$st}++;
        $log_exp{"m$i"} = [ "m$i", $st, $ep_of{$kind}, '-', ('-') x 8 ];
        $n_err++;
        next;
    }

    # usage
    my ($prompt, $hit, $comp, $reas);
    if (rand() < 0.05) {   # mock defaults
        ($prompt, $hit, $comp) = (20, 8, 30);
        my $served = $case eq 'served_differs' || $case eq 'served_other' ? $raw : ($reqm // 'deepseek-flash');
        $reas = ($served =~ /reasoner/ || ($reqm // '') =~ /reasoner/) ? 12 : 0;
    } else {
        $prompt = int rand 5000;
        $hit = int rand($prompt + 1);
        $comp = 1 + int rand 3000;
        $reas = rand() < 0.5 ? 0 : int rand($comp + 1);
        push @mock, "prompt=$prompt", "hit=$hit", "completion=$comp", "reasoning=$reas";
    }
    $reas = 0 if $kind eq 'messages';   # the Anthropic format has no reasoning count
    my $miss = $prompt - $hit;
    if ($kind ne 'messages') {
        push @mock, 'no_miss=1' if rand() < 0.15;
        push @mock, 'cached_null=1' if rand() < 0.15;
        push @mock, 'usage_first=1' if !$stream && rand() < 0.15;
        push @mock, 'usage_only_chunk=1' if $stream && rand() < 0.2;
    }
    push @mock, 'crlf=1' if $stream && rand() < 0.2;
    push @mock, 'keepalive_ms=30;keepalive_every_ms=10' if rand() < 0.05;
    my $z = rand;
    if ($z < 0.25) {
        my @cuts = sort { $a <=> $b } map { 1 + int rand 900 } 1 .. 1 + int rand 6;
        push @mock, 'split=' . join(',', @cuts), 'split_delay_ms=' . (rand() < 0.5 ? 0 : 2);
    } elsif ($z < 0.28) {
        push @mock, 'split_every=' . (1 + int rand 13), 'split_delay_ms=0';
    }

    my $r = $main->http(POST => $path, body => $JSON->encode($body), mock => join(';', @mock),
                        headers => { 'X-Req-Id' => "m$i" });
    is($r->{status}, 200, "request $i ($kind stream=$stream $case): 200") or next;
    if ($stream) {
        like($r->{body}, $kind eq 'messages' ? qr/message_stop/ : qr/\[DONE\]/, "request $i: complete stream")
            or diag "mock: @mock";
    }
    my $ep = $ep_of{$kind};
    $req{$ep}{$label}{200}++;
    my $k = $tok{$ep}{$label} //= { hit => 0, miss => 0, out => 0, reas => 0 };
    $k->{hit} += $hit; $k->{miss} += $miss; $k->{out} += $comp; $k->{reas} += $reas;
    $total_sum += $prompt + $comp;
    my $c = $PRICE{$label} ? cost_units($label, { hit => $hit, miss => $miss, out => $comp }, 0) : undef;
    $cost{$ep}{$label} += $c if defined $c;
    my $finish = 'stop';
    $log_exp{"m$i"} = [ "m$i", 200, $ep, $raw, $prompt, $comp, $prompt + $comp, $hit, $miss, $reas, $finish,
                        defined $c ? fmt9($c) : '-' ];
    $n_ok++;
}
note(sprintf('%d requests (%d ok, %d errors) in %.1f s; cases: %s', $N, $n_ok, $n_err, time - $t0,
             join(' ', map { "$_=$seen_case{$_}" } sort keys %seen_case)));
ok($seen_case{$_}, "case $_ exercised") for qw(response served_differs served_other request_body request_other unknown);

# ------------------------------------------------------------------ main: assertions
my $m = $main->scrape_settled(accept => 'openmetrics');
for my $ep (sort keys %req) {
    for my $model (sort keys %{ $req{$ep} }) {
        for my $st (sort keys %{ $req{$ep}{$model} }) {
            is($m->value('deepseek_requests_total', { endpoint => $ep, model => $model, status => $st }),
               $req{$ep}{$model}{$st}, "requests_total{$ep,$model,$st}");
        }
    }
}
is($m->value('deepseek_requests_total'), $N, "requests_total sums to $N");

my %TYPE = (hit => 'input_cache_hit', miss => 'input_cache_miss', out => 'output');
my $ntok = 0;
for my $ep (sort keys %tok) {
    for my $model (sort keys %{ $tok{$ep} }) {
        my $k = $tok{$ep}{$model};
        for my $ty (qw(hit miss out)) {
            is($m->value('deepseek_tokens_total', { endpoint => $ep, model => $model, type => $TYPE{$ty} }),
               $k->{$ty}, "tokens_total{$ep,$model,$TYPE{$ty}} == $k->{$ty}");
            $ntok++;
        }
        is($m->value('deepseek_reasoning_tokens_total', { endpoint => $ep, model => $model }), $k->{reas},
           "reasoning_tokens_total{$ep,$model} == $k->{reas}");
        is($m->count('deepseek_reasoning_tokens_total', { endpoint => $ep, model => $model }), 1,
           "one reasoning series for {$ep,$model}");
    }
}
is(scalar($m->samples('deepseek_tokens_total')), $ntok, "exactly $ntok token series (none for error-only label sets)");
is($m->value('deepseek_tokens_total'), $total_sum, "hit + miss + output over all series == sum of total_tokens ($total_sum)");
is($m->value('deepseek_errors_total', { reason => 'rate_limited', model => 'deepseek-v4-pro' }),
   (grep { $_->[1] == 429 } values %log_exp) + 0, 'errors_total{rate_limited} from 429s, model from the request body');
is($m->value('deepseek_usage_missing_total'), 0, 'no usage missing: every 200 had its usage read');
is($m->value('deepseek_errors_total', { reason => qr/^(?:stream_truncated|queue_timeout|empty_response|content_filter|insufficient_system_resource|client_closed)$/ }),
   0, 'no in-band failures counted for complete answers');

# cost: exact, per (endpoint, model), compared as integers in 1e-12 units
my $ncost = 0;
for my $ep (sort keys %cost) {
    for my $model (sort keys %{ $cost{$ep} }) {
        my @s = $m->samples('deepseek_cost_total', { endpoint => $ep, model => $model });
        is(scalar @s, 1, "one cost series {$ep,$model}") or next;
        is($s[0]{labels}{currency}, 'USD', "currency label USD {$ep,$model}");
        my $txt = raw_value($m, $s[0]);
        like($txt, qr/^\d+\.\d{12}$/, "cost printed with 12 decimals ($txt)");
        is(dec_units($txt), $cost{$ep}{$model}, "cost_total{$ep,$model} == hand computation ($txt)");
        $ncost++;
    }
}
is(scalar($m->samples('deepseek_cost_total')), $ncost, 'cost series only for priced models');

# access-log variables, per request
my $log = read_dsm_log($main);
my @F = qw(id status endpoint model prompt completion total hit miss reasoning finish cost);
my ($bad, $bad_cost) = (0, 0);
for my $id (sort keys %log_exp) {
    my $got = $log->{$id};
    unless ($got) { fail("access log line for $id"); $bad++; next }
    my $want = $log_exp{$id};
    for my $j (0 .. $#F - 1) {
        next if $got->[$j] eq $want->[$j];
        $bad++;
        diag("log $id: \$deepseek_$F[$j] got '$got->[$j]' want '$want->[$j]'") if $bad <= 10;
    }
    if ($got->[-1] ne $want->[-1]) {
        $bad_cost++;
        diag("log $id: \$deepseek_cost got '$got->[-1]' want '$want->[-1]' (model label/raw: $want->[3])") if $bad_cost <= 5;
    }
}
is($bad, 0, 'access log: $deepseek_* variables match the mock usage of every request');
{
    # the metric charges a request priced by its label (model from the request body
    # when the response has none); the variable should report that same cost
    is($bad_cost, 0, 'access log: $deepseek_cost equals the per-request cost (9 decimals)');
}
{
    # the part that must hold whatever the bug above: responses that name their model
    my $bad2 = 0;
    for my $id (keys %log_exp) {
        next unless $log->{$id} && $log_exp{$id}[3] ne '-';
        $bad2++ if $log->{$id}[-1] ne $log_exp{$id}[-1];
    }
    is($bad2, 0, 'access log: $deepseek_cost exact for responses that carry "model"');
}

# ------------------------------------------------------------------ holiday
my $mh = $hol->scrape_settled;
my @hs = $mh->samples('deepseek_cost_total', { endpoint => 'chat_completions', model => 'deepseek-flash' });
is(scalar @hs, 1, 'holiday: one cost series');
is(dec_units(raw_value($mh, $hs[0])), $hol_exp{units}, "holiday $holiday (utc_offset=$off_c_str): off-peak rates")
    if @hs;
my $hlog = read_dsm_log($hol);
for my $id (grep { /^holiday/ } keys %hol_exp) {
    is($hlog->{$id}[-1], fmt9($hol_exp{$id}), "holiday: \$deepseek_cost of $id at off-peak rate");
}

# ------------------------------------------------------------------ peak: after the boundary
$peak->set_clock($AFTER);
for my $u (@PEAK_USAGE) {
    my ($id, $x) = pricing_req($peak, $u, 'after', 'deepseek-v4-pro');
    $peak_exp{$id} = cost_units('deepseek-v4-pro', $x, 1);
    $peak_exp{units} += $peak_exp{$id};
}
my $mp = $peak->scrape_settled;
my @ps = $mp->samples('deepseek_cost_total', { endpoint => 'chat_completions', model => 'deepseek-v4-pro' });
is(scalar @ps, 1, 'peak: one cost series');
is(@ps ? dec_units(raw_value($mp, $ps[0])) : -1, $peak_exp{units},
   "peak boundary $range (+05:45): before (10:59:59) at peak, after (11:00:00) at off-peak rates");
my $plog = read_dsm_log($peak);
for my $id (grep { /^(?:before|after)-/ } keys %peak_exp) {
    is($plog->{$id}[-1], fmt9($peak_exp{$id}), "peak: \$deepseek_cost of $id (" . ($id =~ /^after/ ? 'off-peak' : 'peak') . ')');
}

$_->stop for $main, $peak, $hol;
done_testing;
