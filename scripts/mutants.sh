#!/usr/bin/env perl
# Mutation check: plant each single defect listed in mutants/*.mut, rebuild the
# dynamic module, run the mutant's tests against /usr/sbin/nginx with it, and
# require that at least one of them fails (the mutant is "killed").
#
#   scripts/mutants.sh                          # every mutants/*.mut
#   MUTANTS=id1,id2 scripts/mutants.sh          # only these ids
#   MUTANT_FILES="mutants/core.mut" scripts/mutants.sh
#
# Variables: MUTANT_DIR (scratch copy, default build/mutants; reused across
# runs so the nginx-dev tree builds incrementally), MUTANT_TIMEOUT (seconds
# per mutant's test run, default 300; the baseline gets that per test file),
# DSM_NGINX (default /usr/sbin/nginx), CC (passed to scripts/build.sh).
#
# Mutant file format (see docs/testing.md): blocks of
#     === id: short-kebab-name
#     file: <path from the repo root>
#     tests: t/NN-a.t t/NN-b.t
#     build: asan            (optional: a defect only the ASan+UBSan build sees)
#     --- from
#     <exact source lines, occurring exactly once in the file>
#     --- to
#     <replacement lines: the planted defect>
# "#" lines outside from/to are comments; trailing blank lines and trailing
# "# ..." lines of a from/to block (a comment before the next mutant) are
# ignored.
#
# Results: KILLED (a listed test failed or timed out), SURVIVED (all passed),
# BROKEN-ANCHOR (the from lines occur 0 or 2+ times, or from == to),
# BROKEN-BUILD (the mutant does not compile: not a kill). The unmutated build
# must pass every listed test first, else the run aborts. Exit status 0 only
# when every selected mutant is killed. Logs: $MUTANT_DIR/logs/<id>.log.
#
# Perl core modules only.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Find;
use POSIX qw(strftime);
use Time::HiRes qw(time);

my $REPO = abs_path(dirname(abs_path($0)) . '/..');
my $WORK = $ENV{MUTANT_DIR} || "$REPO/build/mutants";
make_path($WORK);
$WORK = abs_path($WORK);
my $SRC = "$WORK/src";
my $LOGS = "$WORK/logs";
my $TIMEOUT = $ENV{MUTANT_TIMEOUT} || 300;
my $NGINX = $ENV{DSM_NGINX} || '/usr/sbin/nginx';
my $SO = "$SRC/build/modules/ngx_http_deepseek_metrics_module.so";

$| = 1;

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or die "mutants: $f: $!\n";
    local $/;
    my $s = <$fh>;
    return $s;
}

sub spew {
    my ($f, $s) = @_;
    open my $fh, '>', "$f.tmp.$$" or die "mutants: $f: $!\n";
    print $fh $s;
    close $fh or die "mutants: $f: $!\n";
    chmod((stat $f)[2] & 07777, "$f.tmp.$$") if -e $f;
    rename "$f.tmp.$$", $f or die "mutants: $f: $!\n";
}

# ------------------------------------------------------------ parse mutants

sub parse_file {
    my ($path) = @_;
    my (@m, $cur, $sect);
    my $n = 0;
    my $rel = $path =~ s{^\Q$REPO\E/}{}r;

    for my $line (split /\n/, slurp($path), -1) {
        $n++;
        if ($line =~ /^===\s*id:\s*(\S+)\s*$/) {
            $cur = { id => $1, src => "$rel:$n", from => [], to => [], tests => [] };
            push @m, $cur;
            $sect = undef;
            next;
        }
        if ($line =~ /^===/) {
            die "mutants: $rel:$n: expected \"=== id: name\"\n";
        }
        if ($line =~ /^--- (from|to)\s*$/) {
            die "mutants: $rel:$n: \"--- $1\" outside a mutant\n" unless $cur;
            $sect = $1;
            next;
        }
        if (defined $sect) {
            push @{ $cur->{$sect} }, $line;
            next;
        }
        next if $line =~ /^\s*(#|$)/;
        die "mutants: $rel:$n: text outside a mutant\n" unless $cur;
        if ($line =~ /^file:\s*(\S+)\s*$/) { $cur->{file} = $1; next }
        if ($line =~ /^tests:\s*(.*?)\s*$/) { $cur->{tests} = [ split ' ', $1 ]; next }
        if ($line =~ /^build:\s*(dynamic|asan)\s*$/) { $cur->{build} = $1; next }
        die "mutants: $rel:$n: unknown line: $line\n";
    }

    for my $m (@m) {
        for my $s (qw(from to)) {
            # trailing blank lines, and "# " comment lines between blocks
            pop @{ $m->{$s} } while @{ $m->{$s} } && $m->{$s}[-1] =~ /^(\s*|# .*|#)$/;
        }
        my $where = "$m->{src} ($m->{id})";
        die "mutants: $where: no file:\n" unless $m->{file};
        die "mutants: $where: no tests:\n" unless @{ $m->{tests} };
        die "mutants: $where: empty \"--- from\"\n" unless @{ $m->{from} };
        $m->{mfile} = $rel;
        $m->{build} //= 'dynamic';
    }
    return @m;
}

my @files = $ENV{MUTANT_FILES}
    ? map { m{^/} ? $_ : "$REPO/$_" } split ' ', $ENV{MUTANT_FILES}
    : sort glob("$REPO/mutants/*.mut");
die "mutants: no mutant files (mutants/*.mut)\n" unless @files;

my (@mutants, %seen);
for my $f (@files) {
    for my $m (parse_file($f)) {
        die "mutants: duplicate id $m->{id} ($m->{src}, $seen{$m->{id}})\n"
            if $seen{$m->{id}};
        $seen{$m->{id}} = $m->{src};
        push @mutants, $m;
    }
}

if ($ENV{MUTANTS}) {
    my %want = map { $_ => 1 } split /[,\s]+/, $ENV{MUTANTS};
    for my $id (keys %want) { die "mutants: unknown id $id\n" unless $seen{$id} }
    @mutants = grep { $want{ $_->{id} } } @mutants;
}
die "mutants: nothing selected\n" unless @mutants;

for my $m (@mutants) {
    die "mutants: $m->{src}: $m->{file} does not exist\n" unless -f "$REPO/$m->{file}";
    for (@{ $m->{tests} }) { die "mutants: $m->{src}: test $_ does not exist\n" unless -f "$REPO/$_" }
}

# ------------------------------------------------------------ scratch copy

# Everything but build/ and .git is copied; a file is written only when its
# content differs, so unchanged sources keep their objects (incremental build).
my %pristine;

sub sync_tree {
    my @paths;
    find({ no_chdir => 1, wanted => sub {
        return if $File::Find::name eq $REPO;
        my $rel = substr($File::Find::name, length($REPO) + 1);
        if ($rel =~ m{^(build|\.git|node_modules)$} || $rel =~ m{(^|/)node_modules$}) {
            $File::Find::prune = 1;
            return;
        }
        push @paths, $rel if -f $File::Find::name && !-l $File::Find::name;
    } }, $REPO);

    for my $rel (@paths) {
        my $content = slurp("$REPO/$rel");
        $pristine{$rel} = $content;
        my $dst = "$SRC/$rel";
        next if -f $dst && slurp($dst) eq $content;
        make_path(dirname($dst));
        spew($dst, $content);
        chmod((stat "$REPO/$rel")[2] & 07777, $dst);
    }
    chmod 0755, $WORK, $SRC;   # workers run as nobody
}

sub restore {
    my ($rel) = @_;
    my $dst = "$SRC/$rel";
    spew($dst, $pristine{$rel}) unless slurp($dst) eq $pristine{$rel};
}

# ------------------------------------------------------------ run steps

sub run_logged {
    my ($log, $cmd, %o) = @_;
    open my $fh, '>>', $log or die "mutants: $log: $!\n";
    print $fh "\n\$ $cmd\n";
    close $fh;
    my $env = join ' ', map { "$_=" . quote($o{env}{$_}) } sort keys %{ $o{env} || {} };
    my $rc = system('/bin/bash', '-c',
                    "cd " . quote($SRC) . " && env $env $cmd >> " . quote($log) . " 2>&1");
    return $rc == -1 ? 255 : ($rc & 127 ? 128 + ($rc & 127) : $rc >> 8);
}

sub quote { my ($s) = @_; $s =~ s/'/'\\''/g; return "'$s'" }

# "build: asan" mutants (a defect only a sanitizer sees) run against the
# ASan+UBSan nginx of the scratch copy, with the repository's nginx source
my $ASAN = "$SRC/build/asan/sbin/nginx";

sub build {
    my ($log, $kind) = @_;
    if (($kind // 'dynamic') eq 'asan') {
        my $fetched = "$REPO/build/nginx-src/.dsm-fetched";
        if (-f $fetched && !-f "$SRC/build/nginx-src/.dsm-fetched") {
            make_path("$SRC/build/nginx-src");
            spew("$SRC/build/nginx-src/.dsm-fetched", slurp($fetched));
        }
        return run_logged($log, 'scripts/build-asan.sh') == 0 && -x $ASAN;
    }
    unlink $SO;
    my $rc = run_logged($log, 'scripts/build.sh');
    return $rc == 0 && -f $SO;
}

# $limit: seconds for the whole prove run (a mutant's few tests: $TIMEOUT)
sub run_tests {
    my ($log, $kind, $limit, @tests) = @_;
    my $asan = ($kind // 'dynamic') eq 'asan';
    my $rc = run_logged($log,
        "timeout -k 10 $limit prove -I t/lib -j1 " . join(' ', map { quote($_) } @tests),
        env => { DSM_NGINX => $asan ? $ASAN : $NGINX, DSM_MODULE => $asan ? '' : $SO,
                 DSM_TEST_TIMEOUT => $TIMEOUT });
    return $rc;
}

sub apply {
    my ($m) = @_;
    my $text = $pristine{ $m->{file} };
    return "not in the copy" unless defined $text;
    return "from == to" if join("\n", @{ $m->{from} }) eq join("\n", @{ $m->{to} });
    my @lines = split /\n/, $text, -1;
    my @from = @{ $m->{from} };
    my @at;
    for my $i (0 .. @lines - @from) {
        my $ok = 1;
        for my $j (0 .. $#from) {
            if ($lines[$i + $j] ne $from[$j]) { $ok = 0; last }
        }
        push @at, $i if $ok;
    }
    return "anchor occurs " . scalar(@at) . " times" unless @at == 1;
    splice @lines, $at[0], scalar(@from), @{ $m->{to} };
    spew("$SRC/$m->{file}", join("\n", @lines));
    $m->{line} = $at[0] + 1;
    return undef;
}

# ------------------------------------------------------------ main

make_path($SRC, $LOGS);
printf "mutants: %d mutant(s) from %s; scratch %s\n", scalar(@mutants),
    join(' ', map { s{^\Q$REPO\E/}{}r } @files), $SRC;
sync_tree();

# baseline: the unmutated module must pass every listed test, per build kind
for my $kind (qw(dynamic asan)) {
    my %union;
    $union{$_} = 1 for map { @{ $_->{tests} } } grep { $_->{build} eq $kind } @mutants;
    my @all = sort keys %union or next;
    my $blog = "$LOGS/_baseline-$kind.log";
    unlink $blog;
    my $t0 = time;
    print "mutants: $kind baseline build + " . scalar(@all) . " test file(s) ...\n";
    build($blog, $kind) or die "mutants: the unmutated module does not build, see $blog\n";
    # every test file of every mutant, one after another: each gets the
    # time a mutant's run gets, not all of them together
    my $brc = run_tests($blog, $kind, $TIMEOUT * @all, @all);
    if ($brc != 0) {
        system('tail', '-n', '40', $blog);
        die "mutants: ABORT: the unmutated $kind build fails its tests (exit $brc), so"
            . " every mutant would look killed; see $blog\n";
    }
    printf "mutants: $kind baseline passes (%.0fs)\n", time - $t0;
}

my (@rows, $killed);
my $dirty;
my $idw = 10;
for (@mutants) { $idw = length $_->{id} if length $_->{id} > $idw }

for my $m (@mutants) {
    my $log = "$LOGS/$m->{id}.log";
    unlink $log;
    my $start = time;
    my ($result, $why);

    restore($dirty) if defined $dirty;
    $dirty = $m->{file};

    if (defined(my $err = apply($m))) {
        $result = 'BROKEN-ANCHOR';
        $why = $err;
    } elsif (!build($log, $m->{build})) {
        $result = 'BROKEN-BUILD';
        $why = "does not compile, see $log";
    } else {
        my $rc = run_tests($log, $m->{build}, $TIMEOUT, @{ $m->{tests} });
        if ($rc == 124 || $rc == 137) { $result = 'KILLED'; $why = 'timeout' }
        elsif ($rc != 0)              { $result = 'KILLED' }
        else                          { $result = 'SURVIVED' }
    }
    $killed++ if $result eq 'KILLED';
    my $row = { %$m, result => $result, why => $why, secs => time - $start };
    push @rows, $row;
    printf "%-*s  %-52s %-13s %4.0fs%s\n", $idw, $m->{id},
        $m->{file} . ($m->{line} ? ":$m->{line}" : ''), $result, $row->{secs},
        $why ? "  ($why)" : '';
}

restore($dirty) if defined $dirty;
# leave the scratch builds unmutated
build("$LOGS/_restore.log", $_) for sort { $a cmp $b } keys %{{ map { $_->{build} => 1 } @mutants }};

my $total = @rows;
print "\n", '=' x 78, "\n";
printf "%-*s  %-40s %-13s %s\n", $idw, 'id', 'file', 'result', 'seconds';
for my $r (@rows) {
    printf "%-*s  %-40s %-13s %5.0f\n", $idw, $r->{id}, $r->{file} =~ s{.*/}{}r,
        $r->{result}, $r->{secs};
}
print '=' x 78, "\n";
printf "killed %d/%d\n", $killed // 0, $total;

my @surv = grep { $_->{result} eq 'SURVIVED' } @rows;
my @broken = grep { $_->{result} =~ /^BROKEN/ } @rows;
if (@surv) {
    print "survivors (no listed test failed):\n";
    printf "  %s (%s; tests: %s)\n", $_->{id}, $_->{src}, join(' ', @{ $_->{tests} }) for @surv;
}
if (@broken) {
    print "broken (not a kill; fix the mutant):\n";
    printf "  %s (%s): %s\n", $_->{id}, $_->{src}, $_->{why} for @broken;
}
exit(($killed // 0) == $total ? 0 : 1);
