#!/usr/bin/perl
# The Debian package (make deb -> scripts/deb.sh): built with dpkg-buildpackage
# and dh-sequence-nginx, shaped like Debian's libnginx-mod-* (Depends on the
# exact nginx-abi the installed nginx provides, .so in /usr/lib/nginx/modules,
# load_module snippet in modules-available enabled by a modules-enabled link
# made by dh_nginx's maintainer scripts, no conffiles, docs and examples in
# /usr/share/doc). Installed with dpkg -i, it is loaded by Debian's stock
# /etc/nginx/nginx.conf: `nginx -t` passes with a conf.d file using the module,
# and a copy of the stock configuration (paths moved to a private prefix, the
# default site dropped, nothing else changed) serves metrics of traffic
# proxied to the mock. dpkg -r disables and removes it, dpkg -P leaves /etc/nginx
# and every path the package touched exactly as before.
#
# Changes the machine while it runs (dpkg -i, a file in /etc/nginx/conf.d for
# the nginx -t runs only): root only; refuses to run over a copy of the package
# dpkg knows; purges the package and removes the conf.d file in END whatever
# happens. A running system nginx is left running: the package's nginx-reload
# trigger reloads it on install and removal (as for any Debian module), never
# while the conf.d file exists, and its master must be the same at the end.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use DSM::Test;
use Digest::MD5 ();
use File::Find ();
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use POSIX ();

my $PKG   = 'libnginx-mod-http-deepseek-metrics';
my $SO    = '/usr/lib/nginx/modules/ngx_http_deepseek_metrics_module.so';
my $AVAIL = '/usr/share/nginx/modules-available/mod-http-deepseek-metrics.conf';
my $ENDIR = '/etc/nginx/modules-enabled';
my $LINK  = "$ENDIR/50-mod-http-deepseek-metrics.conf";
my $DOC   = "/usr/share/doc/$PKG";
my $STOCK = '/etc/nginx/nginx.conf';
my $REPO  = DSM::Test->repo;

plan skip_all => 'the package holds the dynamic module; covered by the dynamic run'
    if defined $ENV{DSM_MODULE} && $ENV{DSM_MODULE} eq '';
plan skip_all => 'needs root: installs and purges a package with dpkg' if $> != 0;
for my $bin (qw(dpkg-buildpackage dh dh_nginx dpkg-deb dpkg dpkg-query)) {
    plan skip_all => "$bin not installed (debhelper, dpkg-dev, nginx-dev: scripts/deps.sh)"
        unless system("command -v $bin >/dev/null 2>&1") == 0;
}
plan skip_all => "no Debian nginx configuration ($STOCK, $ENDIR)" unless -f $STOCK && -d $ENDIR;
sub system_nginx {   # master pid of a running system nginx, or 0
    open my $pf, '<', '/run/nginx.pid' or return 0;
    my ($pid) = (<$pf> // '') =~ /(\d+)/;
    return $pid && kill(0, $pid) && (readlink("/proc/$pid/exe") // '') =~ /nginx/ ? $pid : 0;
}
my $system_nginx = system_nginx();

sub run {   # (exit code, output)
    my ($cmd, $timeout) = @_;
    my $r = DSM::Test::_run_capture($cmd, undef, $timeout // 120);
    return ($r->{code}, $r->{out});
}
sub slurp { my ($f) = @_; open my $fh, '<', $f or return undef; local $/; my $c = <$fh>; return $c }
sub status { my (undef, $o) = run([ 'dpkg-query', '-W', '-f=${db:Status-Abbrev}', $PKG ]); return $o }

my $t = DSM::Test->new;

# the test must not overwrite an operator's copy (and could not restore it)
my ($known) = run([ 'dpkg-query', '-W', $PKG ]);
if ($known == 0) {
    fail("$PKG is known to dpkg before the test (status '" . status() . "'): "
         . "the test installs and purges it; remove it first (dpkg -P $PKG)");
    done_testing;
    exit 1;
}

# everything the test may change, to compare after the purge
sub etc_nginx_snapshot {
    my %s;
    File::Find::find({ no_chdir => 1, wanted => sub {
        my $p = $File::Find::name;
        $s{$p} = -l $p ? 'link ' . readlink($p)
               : -d $p ? 'dir'
               : 'file ' . Digest::MD5->new->add(slurp($p) // '')->hexdigest;
    } }, '/etc/nginx');
    return \%s;
}
my $etc_before = etc_nginx_snapshot();

my ($installed, $confd);
sub cleanup {
    unlink $confd if $confd;
    undef $confd;
    if ($installed) {
        undef $installed;
        my ($c, $o);
        for (1 .. 120) {   # a dpkg run of the test may still hold the lock: 60 s at most
            ($c, $o) = run([ 'dpkg', '-P', $PKG ]);
            last unless $c && $o =~ /lock/;
            Time::HiRes::sleep(0.5);
        }
        diag("cleanup: dpkg -P $PKG failed: $o") if $c;
    }
}
END { my $exit = $?; cleanup(); $? = $exit }
# the harness's signal handlers and watchdog end the process without END blocks
for my $sig (qw(INT TERM HUP PIPE ALRM)) {
    my $prev = $SIG{$sig};
    $SIG{$sig} = sub { cleanup(); ref $prev eq 'CODE' ? $prev->(@_) : POSIX::_exit(1) };
}

# ------------------------------------------------------------------ build

my $hdr = slurp("$REPO/ngx_http_deepseek_metrics_module/ngx_http_deepseek_metrics.h");
my ($VERSION) = $hdr =~ /^#define NGX_HTTP_DSM_VERSION\s+"([^"]+)"/m;
ok(defined $VERSION, "module version macro: $VERSION");
my (undef, $ARCH) = run([ 'dpkg', '--print-architecture' ]);
chomp $ARCH;
my (undef, $prov) = run([ 'dpkg-query', '-W', '-f=${db:Status-Status} ${Provides}\n' ]);
my %abi = map { $_ => 1 } map { /\b(nginx-abi-[^,\s]+)/g } grep { s/^installed // } split /\n/, $prov;
my @abi = sort keys %abi;
is(scalar @abi, 1, "the installed nginx provides one nginx-abi: @abi");

# the build writes only below build/ (it copies what it needs to build/deb/src):
# the top level (names) and everything the package is made of (names, sizes,
# mtimes, modes); other directories belong to tests running alongside
my @SRC_PATHS = qw(config Makefile README.md debian ngx_http_deepseek_metrics_module docs examples
                   alerting scripts dashboards/README.md dashboards/deepseek.json);
sub source_tree {
    my %s;
    opendir my $d, $REPO or die "$REPO: $!";
    $s{"/$_"} = 'entry' for grep { !/^(?:\.\.?|build|node_modules)$/ } readdir $d;
    closedir $d;
    File::Find::find({ no_chdir => 1, wanted => sub {
        my $rel = substr($File::Find::name, length $REPO);
        my @st = lstat $File::Find::name;
        $s{$rel} = -l _ ? 'link ' . readlink($File::Find::name) : -d _ ? 'dir' : "$st[7] $st[9] $st[2]";
    } }, map { "$REPO/$_" } grep { -e "$REPO/$_" } @SRC_PATHS);
    # dpkg-buildpackage run in the checkout would write ../<package>_*
    $s{"../$_"} = 'entry' for map { s{.*/}{}r } glob("$REPO/../${PKG}_*");
    return \%s;
}
my $tree_before = source_tree();
my $t0 = time;
delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL)};   # a make of its own, not a sub-make of `make test`
my ($bc, $bout) = run([ 'make', '-C', $REPO, '--no-print-directory', 'deb' ], 900);
my $deb = "$REPO/build/deb/${PKG}_${VERSION}_$ARCH.deb";
# a failed build installs nothing (deb.sh also fails a package with the wrong nginx-abi)
is($bc, 0, sprintf('make deb succeeds (%.0f s)', time - $t0)) or do { diag $bout; done_testing; exit 1 };
ok(-f $deb, "make deb produced build/deb/${PKG}_${VERSION}_$ARCH.deb")
    or do { done_testing; exit 1 };
my $tree_after = source_tree();
is_deeply([ grep { ($tree_before->{$_} // '') ne ($tree_after->{$_} // '') } sort keys %{{ %$tree_before, %$tree_after }} ],
          [], 'make deb changed nothing outside build/');

# ------------------------------------------------------------------ the .deb

my %f;
for my $field (qw(Package Version Architecture Section Depends Multi-Arch)) {
    my (undef, $v) = run([ 'dpkg-deb', '-f', $deb, $field ]);
    chomp $v;
    $f{$field} = $v;
}
is($f{Package}, $PKG, 'Package');
is($f{Version}, $VERSION, 'Version is the module version macro');
is($f{Architecture}, $ARCH, 'Architecture');
is($f{Section}, 'httpd', 'Section httpd, as Debian\'s libnginx-mod-*');
is($f{'Multi-Arch'}, 'foreign', 'Multi-Arch: foreign, as Debian\'s libnginx-mod-*');
my @dep_abi = grep { /^nginx-abi-/ } map { s/^\s+|\s+$//gr } split /,/, $f{Depends};
is("@dep_abi", "@abi", "Depends names exactly the nginx-abi the installed nginx provides ($f{Depends})");

my $ctl = tempdir('dsm-deb-XXXXXX', TMPDIR => 1, CLEANUP => 1) . '/control';
my ($ec, $eout) = run([ 'dpkg-deb', '-e', $deb, $ctl ]);
is($ec, 0, 'dpkg-deb -e') or diag $eout;
opendir my $cd, $ctl or die "$ctl: $!";
is(join(' ', sort grep { !/^\./ } readdir $cd), 'control md5sums postinst postrm prerm',
   'control members: no conffiles (the enabling link is made by postinst, as Debian does)');
my $pairs = 'mod-http-deepseek-metrics.conf:50-mod-http-deepseek-metrics.conf';
for my $s (qw(postinst prerm postrm)) {
    my $text = slurp("$ctl/$s") // '';
    like($text, qr/# Automatically added by dh_nginx.*\Q$pairs\E/s, "$s: dh_nginx's script for $pairs");
}

# exact contents: what the repository says should be there, nothing else
my %want = ($SO => 'f', $AVAIL => 'f', "$DOC/copyright" => 'f', "$DOC/changelog.gz" => 'f',
            "$DOC/alerting" => 'l examples/alerting');
# dh_compress: docs over 4 KiB are gzipped, examples never (compat >= 12)
my $doc = sub { my ($src, $dst) = @_; $want{ $dst . (-s $src > 4096 && $src !~ /\.(png|jpe?g|gif|svg|css|js|html?)$/ ? '.gz' : '') } = 'f' };
$doc->("$REPO/README.md", "$DOC/README.md");
my $tree = sub {
    my ($dir, $to, $fn) = @_;
    File::Find::find({ no_chdir => 1, wanted => sub {
        my $p = $File::Find::name;
        my $rel = substr($p, length $dir);
        return if -d $p && !-l $p;
        if (-l $p) { $want{"$to$rel"} = 'l ' . readlink $p } else { $fn->($p, "$to$rel") }
    } }, $dir);
};
$tree->("$REPO/docs", "$DOC/docs", $doc);
$tree->("$REPO/examples", "$DOC/examples", sub { $want{ $_[1] } = 'f' });
$tree->("$REPO/alerting", "$DOC/examples/alerting", sub { $want{ $_[1] } = 'f' });
$want{"$DOC/examples/dashboards/$_"} = 'f' for qw(README.md deepseek.json);

my (undef, $list) = run([ 'dpkg-deb', '-c', $deb ]);
my (%got, @dirs);
for (split /\n/, $list) {
    my ($mode, $path) = m{^(\S)\S+\s+\S+\s+\d+\s+\S+\s+\S+\s+\.(/\S*?)/?(?:\s+->\s+\S+)?$} or next;
    my ($target) = / -> (\S+)$/;
    if ($mode eq 'd') { push @dirs, $path; next }
    $got{$path} = $mode eq 'l' ? "l $target" : 'f';
}
is_deeply(\%got, \%want, 'package contents: .so, snippet, docs (README, docs/), examples (incl. dashboard JSON and rules)')
    or diag explain { extra => [ grep { !exists $want{$_} } sort keys %got ],
                      missing => [ grep { !exists $got{$_} } sort keys %want ] };
ok(!grep(m{^/etc}, keys %got, @dirs), 'nothing shipped in /etc');

# paths the package touches, and whether they existed before (dpkg -P must restore that)
my @touched = (@dirs, keys %got, $LINK, "$LINK.removed");
my %existed = map { $_ => (-e $_ || -l $_) ? 1 : 0 } @touched;
ok(!$existed{$_}, "$_ absent before the install") for ($SO, $AVAIL, $LINK, "$LINK.removed", $DOC);
opendir my $ed, $ENDIR or die;
my @enabled_before = sort grep { !/^\.\.?$/ } readdir $ed;
closedir $ed;

# ------------------------------------------------------------------ install

$installed = 1;
my ($ic, $iout) = run([ 'dpkg', '-i', $deb ]);
is($ic, 0, 'dpkg -i') or diag $iout;
is(status(), 'ii ', 'package installed');
is(readlink($LINK), $AVAIL, "$LINK -> $AVAIL (made by postinst)");
is(slurp($AVAIL), "load_module modules/ngx_http_deepseek_metrics_module.so;\n", 'load_module snippet');
ok(-f $SO, "$SO installed");
my (undef, $L) = run([ 'dpkg', '-L', $PKG ]);
my @missing = grep { !-e $_ } split /\n/, $L;
is("@missing", '', 'every path dpkg -L lists exists (symlinks resolve)');
SKIP: {
    skip 'promtool not installed', 1 unless system('command -v promtool >/dev/null 2>&1') == 0;
    my ($pc, $pout) = run([ 'promtool', 'check', 'config', "$DOC/examples/prometheus/prometheus.yml" ]);
    is($pc, 0, 'installed examples/prometheus/prometheus.yml: promtool check config finds its rule files') or diag $pout;
}

# ------------------------------------------------------------------ stock nginx.conf + conf.d

$t->mock_start;
my (undef, $cf) = run([ 'dpkg-query', '-W', '-f=${Conffiles}', 'nginx-common' ]);
my ($stock_md5) = $cf =~ m{^\s*\Q$STOCK\E\s+([0-9a-f]{32})}m;
diag("$STOCK differs from nginx-common's: the test uses it as it is")
    unless ($stock_md5 // '') eq Digest::MD5::md5_hex(slurp($STOCK));

# conf.d text: the harness's placeholders, expanded here (not a main conf: no events {})
(my $site = <<'EOF') =~ s/%%(MOCK_PORT|METRICS_PORT|PORT)%%/$t->port($1)/ge;
# t/35-deb.t: the packaged module, on loopback test ports (removed by the test)
deepseek_metrics_zone dsm_t35:1m;

server {
    listen 127.0.0.1:%%PORT%%;
    location / {
        deepseek_metrics dsm_t35;
        proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
        proxy_set_header Accept-Encoding "";
    }
}

server {
    listen 127.0.0.1:%%METRICS_PORT%%;
    location = /metrics { deepseek_metrics_export; }
}
EOF
# in /etc/nginx/conf.d only while nginx -t reads it (no dpkg trigger meanwhile)
sub confd_write {
    $confd = "/etc/nginx/conf.d/dsm-t35-$$.conf";
    open my $fh, '>', $confd or die "$confd: $!";
    print $fh $site;
    close $fh;
}
sub confd_remove { unlink $confd or die "$confd: $!"; undef $confd }
confd_write();
my ($tc, $tout) = run([ '/usr/sbin/nginx', '-t' ]);
is($tc, 0, "nginx -t: stock $STOCK + conf.d file using the module") or diag $tout;

# A running copy: /etc/nginx copied into the prefix with the stock nginx.conf's
# paths (includes, pid, logs) moved there, sites-enabled emptied (the default
# site listens on :80), daemon off for the harness; modules-enabled keeps the
# package's link. `-p PREFIX` resolves load_module's modules/ like Debian's
# prefix /usr/share/nginx, whose modules is a link to /usr/lib/nginx/modules.
my $p = $t->prefix;
my ($cc, $cout) = run([ 'cp', '-a', '/etc/nginx', "$p/etc" ]);
is($cc, 0, 'copy of /etc/nginx') or diag $cout;
confd_remove();
unlink glob("$p/etc/sites-enabled/*"), grep { $_ ne "$p/etc/conf.d/dsm-t35-$$.conf" } glob("$p/etc/conf.d/*");
symlink('/usr/lib/nginx/modules', "$p/modules") or die "symlink: $!";
is(readlink("$p/etc/modules-enabled/50-mod-http-deepseek-metrics.conf"), $AVAIL, 'the copy enables the package\'s snippet');
my $conf = slurp($STOCK);
my %n = (
    include => ($conf =~ s{(include\s+)/etc/nginx/}{$1$p/etc/}g),
    pid     => ($conf =~ s{^pid\s+\S+;}{pid $p/logs/nginx.pid;}mg),
    error   => ($conf =~ s{^error_log\s+\S+;}{error_log $p/logs/error.log info;}mg),
    access  => ($conf =~ s{(\baccess_log\s+)/var/log/nginx/access\.log;}{$1$p/logs/access.log;}g),
);
is_deeply(\%n, { include => 4, pid => 1, error => 1, access => 1 },
          'stock nginx.conf: 4 includes, pid, error_log, access_log moved to the prefix');
$t->write_conf("# t/35-deb.t: Debian's $STOCK, paths moved; listeners in conf.d: %%PORT%% %%METRICS_PORT%%\n"
               . "daemon off;\n$conf");
my ($nc, $nout) = $t->nginx_t;
is($nc, 0, 'nginx -t on the running copy') or diag $nout;
$t->start;

my @maps = map { slurp("/proc/$_/maps") // '' } $t->worker_pids;
ok(@maps && !grep({ !/\Q$SO\E/ } @maps), "every worker maps $SO");
is($t->chat(model => 'deepseek-flash')->{status}, 200, "request $_: 200") for 1 .. 2;
is($t->chat(model => 'deepseek-flash', mock => 'status=429')->{status}, 429, 'request 3: 429');
my $m = $t->scrape_settled(accept => 'text');
is($m->value('deepseek_requests_total', { endpoint => 'chat_completions', model => 'deepseek-flash', status => '200' }), 2,
   'deepseek_requests_total{status="200"} == 2');
is($m->value('deepseek_requests_total', { endpoint => 'chat_completions', status => '429' }), 1,
   'deepseek_requests_total{status="429"} == 1');
is($m->value('deepseek_build_info', { version => $VERSION, nginx_version => '1.22.1' }), 1,
   "deepseek_build_info{version=\"$VERSION\",nginx_version=\"1.22.1\"} == 1");
$t->stop;

# ------------------------------------------------------------------ remove, purge

my (undef, $Lr) = run([ 'dpkg', '-L', $PKG ]);
my @files = grep { !-d $_ } split /\n/, $Lr;
my ($rc, $rout) = run([ 'dpkg', '-r', $PKG ]);
is($rc, 0, 'dpkg -r') or diag $rout;
is(status(), 'rc ', 'removed: only the purge step is left (dh_nginx\'s postrm)');
my @left = grep { -e $_ || -l $_ } @files;
is("@left", '', 'no file of dpkg -L is left after dpkg -r');
ok(!-e $LINK && !-l $LINK, "$LINK gone after dpkg -r");
is(readlink("$LINK.removed"), $AVAIL,
   "dpkg -r leaves Debian's marker $LINK.removed (not *.conf: never loaded; re-enabled by a reinstall, deleted by purge)");
confd_write();
($tc, $tout) = run([ '/usr/sbin/nginx', '-t' ]);
confd_remove();
like($tout, qr/unknown directive "deepseek_metrics_zone"/, 'after dpkg -r the stock nginx.conf no longer loads the module')
    or diag $tout;
($tc, $tout) = run([ '/usr/sbin/nginx', '-t' ]);
is($tc, 0, 'without the conf.d file the stock nginx.conf passes nginx -t') or diag $tout;

my ($pc, $pout) = run([ 'dpkg', '-P', $PKG ]);
is($pc, 0, 'dpkg -P') or diag $pout;
undef $installed;
my ($qc) = run([ 'dpkg-query', '-W', $PKG ]);
isnt($qc, 0, 'dpkg no longer knows the package');
my @changed = grep { $existed{$_} != ((-e $_ || -l $_) ? 1 : 0) } @touched;
is("@changed", '', 'every path the package touched exists after dpkg -P exactly when it did before');
opendir $ed, $ENDIR or die;
is(join(' ', sort grep { !/^\.\.?$/ } readdir $ed), "@enabled_before", "$ENDIR as before");
is_deeply(etc_nginx_snapshot(), $etc_before, '/etc/nginx exactly as before (names, links, contents)');
is(system_nginx(), $system_nginx, $system_nginx ? "the system nginx still runs (master $system_nginx)"
                                                : 'no system nginx was running, none runs');

done_testing;
