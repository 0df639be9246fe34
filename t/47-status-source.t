#!/usr/bin/perl
# The status page the module serves is the one in status.html: the checked-in
# C header is what tools/status-page.pl generates from it (run the tool after
# editing the page). Separate from the page's behaviour tests, so that a
# defect planted in the header (mutants/page.mut) is caught by those, not here.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;

my $repo = DSM::Test->repo;
my $out = `cd '$repo' && perl tools/status-page.pl --check 2>&1`;
is($?, 0, 'ngx_http_deepseek_metrics_status_page.h is generated from status.html') or diag $out;
like($out, qr/page (\d+), css (\d+), js (\d+) bytes/, 'sizes reported');
my ($p, $c, $j) = $out =~ /page (\d+), css (\d+), js (\d+)/;
ok(($p // 1e9) + ($c // 0) + ($j // 0) < 16384, 'page, style sheet and script under 16 KB together');

done_testing;
