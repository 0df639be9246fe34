#!/usr/bin/perl

# Response body parser: unit driver (gcc and clang builds, and clang with
# ASan+UBSan) over t/parser/fixtures and built-in cases, then a bounded
# libFuzzer run.  Builds with nginx's warning flags and -Werror.

use strict;
use warnings;

use Test::More;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use Cwd qw(abs_path);

my $root = abs_path(dirname(__FILE__) . '/..');
my $out = "$root/build/parser";
my $fixtures = "$root/t/parser/fixtures";
my $have_clang = system('command -v clang >/dev/null 2>&1') == 0;

sub run_build {
    my ($variant) = @_;
    my $log = `'$root/t/parser/build.sh' $variant 2>&1`;
    my $ok = $? == 0;
    ok($ok, "build $variant (-Werror)") or diag($log);
    return $ok;
}

# runs a driver binary; each PASS/FAIL line becomes a test

sub run_driver {
    my ($bin, $label) = @_;
    my @lines = `'$bin' '$fixtures' 2>&1`;
    my $status = $?;
    my ($pass, $fail) = (0, 0);
    my @failed;

    for my $i (0 .. $#lines) {
        my $l = $lines[$i];
        if ($l =~ /^PASS /) {
            $pass++;
        } elsif ($l =~ /^FAIL (.*)/) {
            $fail++;
            my $msg = $l;
            while ($i < $#lines && $lines[$i + 1] =~ /^#/) {
                $msg .= $lines[++$i];
            }
            push @failed, $msg;
        }
    }

    ok($pass >= 150, "$label: driver ran its checks ($pass passed)")
        or diag(join '', @lines[-20 .. -1]);
    is($fail, 0, "$label: no check failed") or diag(join "\n", @failed);
    is($status, 0, "$label: driver exit status 0")
        or diag(join '', grep { !/^PASS / } @lines);
}

make_path($out);

# the driver itself must be able to fail: a wrong expectation is caught

run_build('gcc') or BAIL_OUT('cannot build the parser unit driver');

{
    my $tmp = "$out/selftest";
    make_path($tmp);
    system("cp '$fixtures/sse-doc-example.body' '$tmp/x.body'") == 0
        or die;
    open my $in, '<', "$fixtures/sse-doc-example.expect" or die;
    open my $o, '>', "$tmp/x.expect" or die;
    while (<$in>) {
        s/^completion_tokens=92$/completion_tokens=93/;
        print $o $_;
    }
    close $o;
    my $res = `'$out/driver-gcc' '$tmp' 2>&1`;
    ok($? != 0 && $res =~ /^FAIL x: expected results/m,
       'driver reports a wrong expectation');
}

run_driver("$out/driver-gcc", 'gcc -O2');

SKIP: {
    skip 'clang not installed', 8 unless $have_clang;

    run_build('clang') and run_driver("$out/driver-clang", 'clang -O2');

    if (run_build('asan')) {
        local $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=1';
        local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';
        run_driver("$out/driver-asan", 'clang ASan+UBSan');
    }
}

SKIP: {
    skip 'clang not installed', 3 unless $have_clang;

    run_build('fuzz') or skip 'no libFuzzer', 2;

    my $corpus = "$out/corpus";
    make_path($corpus);
    my $secs = $ENV{DSM_FUZZ_SECONDS} || 20;
    my $cmd = "cd '$out' && '$out/parse-fuzzer' -max_total_time=$secs"
        . " -max_len=4096 -rss_limit_mb=4096 -timeout=10"
        . " -dict='$root/fuzz/parse.dict' -artifact_prefix='$out/fuzz-'"
        . " -print_final_stats=1 '$corpus' '$root/fuzz/corpus' 2>&1";
    my $log = `$cmd`;
    my $st = $?;
    my ($runs) = $log =~ /stat::number_of_executed_units:\s*(\d+)/;

    is($st, 0, "libFuzzer ran ${secs}s without a finding")
        or diag(join "\n", grep { /ERROR|violated|SUMMARY|runtime error/ }
                split /\n/, $log);
    ok(($runs // 0) > 1000, 'libFuzzer executed inputs (' . ($runs // 0)
       . ')');
}

done_testing();
