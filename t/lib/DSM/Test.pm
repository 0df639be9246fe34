package DSM::Test;

=head1 NAME

DSM::Test - nginx-tests style harness for ngx_http_deepseek_metrics_module

=head1 SYNOPSIS

    use lib 't/lib';
    use Test::More;
    use DSM::Test;

    my $t = DSM::Test->new(workers => 2);
    $t->mock_start;                        # node t/mock/deepseek-mock.js; $t->mock_port
    $t->write_conf(<<'EOF');
    %%MODULE%%
    %%COMMON%%
    http {
        deepseek_metrics_zone deepseek:10m;
        server {
            listen 127.0.0.1:%%PORT%%;
            location / {
                deepseek_metrics deepseek;
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
    my $r = $t->http(POST => '/chat/completions', body => '{"model":"deepseek-flash"}',
                     mock => 'status=429');           # X-Mock header shortcut
    is($r->{status}, 429);
    my $m = $t->scrape(accept => 'openmetrics');      # DSM::Metrics, parsed strictly (dies on error)
    is($m->value('deepseek_requests_total', { status => '429' }), 1);
    $t->stop;                                         # also checks the logs (see below)
    done_testing;

=head1 ENVIRONMENT

=over

=item DSM_NGINX  - nginx binary (default /usr/sbin/nginx)

=item DSM_MODULE - the .so to load (default build/modules/ngx_http_deepseek_metrics_module.so).
Empty string: static build, C<%%MODULE%%> expands to nothing. When unset and the binary was
configured with C<--add-module=...> (the ASan build), static is assumed.

=item DSM_KEEP=1 - keep the test's prefix directory (always kept when a test failed; its path is
printed with diag).

=item ASAN_OPTIONS / UBSAN_OPTIONS / LSAN_OPTIONS - passed through. For an ASan binary, when
unset, the harness sets C<ASAN_OPTIONS=detect_odr_violation=0> and
C<UBSAN_OPTIONS=print_stacktrace=1>, and adds C<suppressions=> for t/lib/sanitizer/ubsan.supp and
lsan.supp (findings in stock nginx 1.22.1 code only; each one is explained in the file) unless
a suppressions= is already given. LeakSanitizer reports of a startup that failed (nginx exits
from main() without freeing its init cycle after a configuration error) are ignored; the
error itself is not.

=item DSM_NODE - node binary (default C<node>).

=item DSM_TEST_TIMEOUT - watchdog: a test file is stopped (and its nginx and mock) after this many
seconds (default 600; 0 disables).

=back

=head1 CONSTRUCTOR

C<< DSM::Test->new(workers => N, keep => 0|1, allow => [qr/.../, ...]) >>: makes a private
prefix (conf/, logs/, temp/) in a temporary directory (mode 0755, since workers run as
C<nobody> when tests run as root). C<workers> defaults to 1.

=head1 CONFIGURATION

C<< $t->write_conf($text) >> expands placeholders and writes C<conf/nginx.conf>:

    %%MODULE%%        "load_module /abs/path.so;" or "" for static builds
    %%PREFIX%%        the prefix directory (no trailing slash)
    %%PORT%% %%PORT2%% %%PORT3%% %%METRICS_PORT%%   free 127.0.0.1 ports (also %%PORT_<NAME>%%)
    %%MOCK_PORT%%     the mock's port (mock_start first)
    %%WORKERS%%       the workers option
    %%COMMON%%        main-context: daemon off; worker_processes (unless the conf sets it);
                      pid, error_log (level info) inside the prefix
    %%FAKETIME%%      main-context: the env directives that keep nginx on a fake wall clock
                      (libfaketime; set it with C<< $t->set_clock('2026-12-07 01:00:00') >> (UTC)
                      before start and whenever it should jump; it stands still in between;
                      timers run on the real monotonic clock). C<< DSM::Test::has_faketime >>.
    %%HTTP_COMMON%%   http-context: access_log and every *_temp_path inside the prefix.
                      Inserted automatically right after the first "http {" when absent.

An C<events {}> block is appended when the conf has none. C<< $t->port('NAME') >> returns
the port behind C<%%NAME%%> (C<PORT>, C<PORT2>, C<METRICS_PORT>, ...); ports are probed
and held bound until C<start>, so concurrent tests do not pick the same ones.
C<< $t->write_file($relpath, $content) >> writes any other file into the prefix.

=head1 PROCESS CONTROL

=over

=item start - runs the nginx master in the foreground (C<daemon off>; master stderr captured
in logs/stderr.log), waits until every port used in the conf accepts and the workers are up.
Dies (with the stderr text) if nginx exits.

=item reload - SIGHUP to the master, waits until a full new set of workers replaced the old
ones. Returns 1 on success, 0 if the worker set did not change within 15 s (e.g. a refused
configuration; check C<< $t->log_since >>).

=item stop - SIGQUIT (graceful), then SIGTERM, then SIGKILL, with bounded waits; stops the mock;
scans the logs. Every unexpected line adds a failing test. Called from END if the test did not.

=item nginx_t - runs C<nginx -t> on the written conf: returns C<(exit_code, output)>. (With an
ASan binary LeakSanitizer is off for this run: C<nginx -t> never frees its cycle.)

=item master_pid, worker_pids - the master's PID; the current (not shutting down) workers' PIDs.

=item signal_master($sig) - send a signal to the master.

=back

=head1 HTTP

C<< $t->http($method => $path, %opt) >> - a raw HTTP/1.1 client (own socket, Connection: close
unless a C<Connection> header is given; chunked responses are decoded). Options: C<body>,
C<headers> (hashref), C<mock> (X-Mock header value), C<port> (default PORT), C<host>,
C<timeout> (10 s), C<close_after> (seconds: close the socket after that long, to simulate a
client abort), C<http10>. Returns C<< {status, headers => {lc name => value}, body, raw,
elapsed, first_byte, timeout, closed_early} >> (times in seconds from the request write).

C<< $t->chat(%opt) >> - POST a chat completion: C<model> (deepseek-flash), C<stream> (0),
C<path> (/chat/completions), plus any http() option.

C<< $t->http_raw($bytes, port => P, timeout => T) >> - write raw bytes, return everything read.

C<< $t->pipelined($status, @paths) >> - GET every path, pipelined 500 to a keep-alive connection
(the last one closes it), on port PORT; returns how many responses had that status (a regex:
C<'(?:204|404)'> counts both).

C<< $t->scrape(accept => 'openmetrics'|'text'|'none'|<header>, path => '/metrics',
port => METRICS_PORT) >> - GET the metrics (Prometheus's exact Accept header for
'openmetrics'), die unless 200, parse strictly by its Content-Type: a L<DSM::Metrics> object,
with C<< ->response >> giving the HTTP response.

C<< $t->scrape_settled(%scrape_opts, settle => 5) >> - scrape until C<deepseek_requests_in_flight>
is 0 (exact counts right after traffic); a gauge still above 0 after C<settle> seconds adds a
failing test. C<< $t->wait_until(sub { ... }, $seconds, $what) >> - poll a condition every 50 ms;
on timeout add a failing test naming C<$what> and return false. Every waiting helper in t/*.t
uses it (or fails the same way): a wait that runs out is never a silent pass.

C<< $t->promtool_check($text) >> - C<promtool check metrics> on the text: C<(exit, output)>.

=head1 MOCK

C<mock_start(%args)>, C<mock_port>, C<mock_stop>, C<mock_stats> (decoded /__mock/stats),
C<mock_reset>. Scenario keys: see t/mock/deepseek-mock.js.

=head1 LOGS

C<< $t->errors >> - lines of logs/error.log, logs/stderr.log and logs/mock.err matching
C<[alert] [emerg] [crit] AddressSanitizer runtime error LeakSanitizer exited on signal
exited with code [non-zero]> (and node errors in mock.err), minus allowed patterns.
C<< $t->allow(qr/.../) >> allows a pattern (e.g. a test that SIGKILLs a worker on purpose).
C<< $t->read_log('error.log') >>, C<< $t->log_offset >> / C<< $t->log_since($off) >> - error.log
text, whole or after a byte offset. C<< $t->is_asan >>, C<< $t->is_static >>, C<< $t->prefix >>,
C<< $t->nginx >>, C<< $t->repo >>.

=cut

use strict;
use warnings;

use Test::More;
use IO::Socket::IP;
use IO::Select;
use File::Temp qw(tempdir);
use File::Path qw(make_path remove_tree);
use File::Spec;
use Time::HiRes qw(time sleep);
use POSIX qw(:sys_wait_h WNOHANG);
use Cwd qw(abs_path);
use JSON::PP ();
use Socket qw(SOL_SOCKET SO_REUSEADDR);

use DSM::Metrics;

our @INSTANCES;

# the fake wall clock of an instance whose conf has %%FAKETIME%% (libfaketime)
our $FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
our @FAKETIME_ENV = qw(LD_PRELOAD FAKETIME_TIMESTAMP_FILE FAKETIME_NO_CACHE DONT_FAKE_MONOTONIC TZ);

my $REPO = abs_path(File::Spec->catdir((File::Spec->splitpath(abs_path(__FILE__)))[1], '..', '..', '..'));

my $PROM_ACCEPT = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
    . 'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

sub new {
    my ($class, %o) = @_;
    my $keep = $o{keep} // $ENV{DSM_KEEP};
    my $dir = tempdir('dsm-test-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    chmod 0755, $dir;
    make_path("$dir/conf", "$dir/logs", "$dir/temp", "$dir/html", { mode => 0755 });
    my $self = bless {
        prefix  => $dir,
        workers => $o{workers} // 1,
        keep    => $keep,
        allow   => [ @{ $o{allow} || [] } ],
        ports   => {},
        held    => {},
        nginx   => $ENV{DSM_NGINX} || '/usr/sbin/nginx',
        node    => $ENV{DSM_NODE} || 'node',
        stopped => 1,
        reported => 0,
    }, $class;
    $self->_detect_binary;
    push @INSTANCES, $self;
    _install_handlers();
    return $self;
}

my $handlers_installed;
sub _install_handlers {
    return if $handlers_installed++;
    for my $sig (qw(INT TERM PIPE HUP)) {
        $SIG{$sig} = sub { $SIG{$sig} = 'DEFAULT'; _cleanup_all(); kill $sig, $$; POSIX::_exit(1) };
    }
    # watchdog: every test file ends within DSM_TEST_TIMEOUT seconds (default 600)
    my $limit = $ENV{DSM_TEST_TIMEOUT} // 600;
    if ($limit > 0) {
        $SIG{ALRM} = sub { Test::More::diag("DSM::Test: test timed out after ${limit}s"); _cleanup_all(); POSIX::_exit(124) };
        alarm $limit;
    }
}

sub prefix  { $_[0]{prefix} }
sub nginx   { $_[0]{nginx} }
sub repo    { $REPO }
sub is_asan { $_[0]{is_asan} }
sub is_static { $_[0]{module} eq '' }
sub module  { $_[0]{module} }
sub workers { $_[0]{workers} }

sub _detect_binary {
    my ($self) = @_;
    my $v = _run_capture([ $self->{nginx}, '-V' ]);
    $self->{nginx_V} = $v->{out};
    $self->{is_asan} = $v->{out} =~ /-fsanitize=[^ ]*address/ ? 1 : 0;
    if (defined $ENV{DSM_MODULE}) {
        $self->{module} = $ENV{DSM_MODULE};
    } elsif ($v->{out} =~ /--add-module=\S*/ && $v->{out} =~ /--add-module=\S*(?:deepseek|\Q$REPO\E)/) {
        $self->{module} = '';
    } else {
        $self->{module} = "$REPO/build/modules/ngx_http_deepseek_metrics_module.so";
    }
    $self->{module} = abs_path($self->{module}) || $self->{module} if $self->{module} ne '';
    if ($self->{is_asan}) {
        $ENV{ASAN_OPTIONS}  = 'detect_odr_violation=0' unless defined $ENV{ASAN_OPTIONS};
        $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1' unless defined $ENV{UBSAN_OPTIONS};
        $ENV{LSAN_OPTIONS}  //= '';
        # suppressions for findings in stock nginx 1.22.1 code (see the files)
        # workers run as nobody and may not enter the checkout (a 0700 clone): they read
        # copies in a world-readable directory
        for ([ 'UBSAN_OPTIONS', 'ubsan.supp' ], [ 'LSAN_OPTIONS', 'lsan.supp' ]) {
            my ($var, $file) = @$_;
            next if $ENV{$var} =~ /suppressions=/;
            $ENV{$var} = join(':', grep { length } $ENV{$var}, 'suppressions=' . _readable_copy($file));
        }
    }
}

# ------------------------------------------------------------------ helpers

my $SUPP_DIR;

sub _readable_copy {
    my ($file) = @_;
    unless ($SUPP_DIR) {
        $SUPP_DIR = tempdir('dsm-supp-XXXXXX', TMPDIR => 1, CLEANUP => 0);   # read until the last worker exits
        chmod 0755, $SUPP_DIR;
    }
    my $dst = "$SUPP_DIR/$file";
    open my $in, '<', "$REPO/t/lib/sanitizer/$file" or die "$file: $!";
    open my $out, '>', $dst or die "$dst: $!";
    print $out do { local $/; <$in> };
    close $out;
    chmod 0644, $dst;
    return $dst;
}

# run a command, capture stdout+stderr; optional stdin text. Returns {code, out}
sub _run_capture {
    my ($cmd, $stdin, $timeout) = @_;
    $timeout //= 60;
    my $in_file;
    if (defined $stdin) {
        my ($fh, $fn) = File::Temp::tempfile('dsm-stdin-XXXXXX', TMPDIR => 1, UNLINK => 1);
        print $fh $stdin; close $fh;
        $in_file = $fn;
    }
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        close $r;
        open STDIN, '<', (defined $in_file ? $in_file : '/dev/null') or POSIX::_exit(127);
        open STDOUT, '>&', $w or POSIX::_exit(127);
        open STDERR, '>&', $w or POSIX::_exit(127);
        exec @$cmd or POSIX::_exit(127);
    }
    close $w;
    my $out = '';
    my $sel = IO::Select->new($r);
    my $deadline = time + $timeout;
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($r, my $buf, 65536);
        last unless $n;
        $out .= $buf;
    }
    close $r;
    my $code;
    for (1 .. 100) {   # bounded: 10 s after the output closed
        my $p = waitpid($pid, WNOHANG);
        if ($p == $pid) { $code = $?; last }
        sleep 0.1;
    }
    if (!defined $code) { kill 'KILL', $pid; waitpid($pid, 0); $code = $?; $out .= "\n[killed after timeout]\n" }
    unlink $in_file if defined $in_file;
    return { code => ($code & 127) ? 128 + ($code & 127) : $code >> 8, out => $out };
}

# child side: get SIGTERM when the test process dies (Linux x86_64 prctl PR_SET_PDEATHSIG),
# so a killed test leaves no nginx or mock behind
sub _pdeathsig {
    eval { syscall(157, 1, 15) } if $^O eq 'linux' && (POSIX::uname())[4] eq 'x86_64';
}

sub _port_free_hold {
    my ($port) = @_;
    my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
                                Listen => 1, ReuseAddr => 0);
    return $s;
}

sub port {
    my ($self, $name) = @_;
    $name //= 'PORT';
    return $self->{ports}{$name} if $self->{ports}{$name};
    return $self->mock_port if $name eq 'MOCK_PORT';
    my %used = map { $_ => 1 } values %{ $self->{ports} };
    for (1 .. 500) {   # bounded
        my $p = 20000 + int(rand(12000));     # below the ephemeral range (32768+)
        next if $used{$p};
        my $s = _port_free_hold($p) or next;
        $self->{held}{$name} = $s;
        return $self->{ports}{$name} = $p;
    }
    die "DSM::Test: no free port found\n";
}

sub _release_ports {
    my ($self) = @_;
    close $_ for values %{ $self->{held} };
    $self->{held} = {};
}

sub allow { my ($self, @re) = @_; push @{ $self->{allow} }, @re; return $self }

sub write_file {
    my ($self, $rel, $content) = @_;
    my $path = "$self->{prefix}/$rel";
    my (undef, $d) = File::Spec->splitpath($path);
    make_path($d) if length $d && !-d $d;
    open my $fh, '>', $path or die "write $path: $!";
    print $fh $content;
    close $fh;
    return $path;
}

sub expand {
    my ($self, $conf) = @_;
    my $p = $self->{prefix};
    my $common = "daemon off;\n"
        . ($conf =~ /^\s*worker_processes\b/m ? '' : "worker_processes $self->{workers};\n")
        . "pid $p/logs/nginx.pid;\nerror_log $p/logs/error.log info;\n";
    my $http_common = "access_log $p/logs/access.log;\n"
        . join('', map { "${_}_temp_path $p/temp/$_;\n" } qw(client_body proxy fastcgi uwsgi scgi));
    if ($conf !~ /%%HTTP_COMMON%%/ && $conf =~ /^(\s*http\s*\{)/m) {
        $conf =~ s/^(\s*http\s*\{)/$1\n%%HTTP_COMMON%%/m;
    }
    $conf .= "\nevents { worker_connections 1024; }\n" unless $conf =~ /^\s*events\s*\{/m;
    my $module = $self->{module} eq '' ? '' : "load_module $self->{module};";
    $conf =~ s/%%MODULE%%/$module/g;
    $conf =~ s/%%COMMON%%/$common/g;
    $conf =~ s/%%HTTP_COMMON%%/$http_common/g;
    $conf =~ s/%%FAKETIME%%/join('', map { "env $_;\n" } @FAKETIME_ENV)/ge;
    $conf =~ s/%%PREFIX%%/$p/g;
    $conf =~ s/%%WORKERS%%/$self->{workers}/g;
    $conf =~ s/%%MOCK_PORT%%/$self->mock_port/ge;
    $conf =~ s/%%((?:METRICS_)?PORT\d*|PORT_\w+?)%%/$self->port($1)/ge;
    return $conf;
}

sub write_conf {
    my ($self, $conf) = @_;
    $self->{conf_raw} = $conf;
    my $c = $self->expand($conf);
    $self->{conf} = $c;
    $self->{conf_ports} = [ map { $self->{ports}{$_} } grep { $conf =~ /%%\Q$_\E%%/ } keys %{ $self->{ports} } ];
    if ($c =~ /^\s*worker_processes\s+(\d+)\s*;/m) { $self->{conf_workers} = $1 }
    elsif ($c =~ /^\s*worker_processes\s+auto/m) { $self->{conf_workers} = _ncpu() }
    $self->{conf_master_off} = $c =~ /^\s*master_process\s+off/m ? 1 : 0;
    $self->{faketime} = $conf =~ /%%FAKETIME%%/ ? 1 : 0;
    $self->write_file('conf/nginx.conf', $c);
    return $c;
}

sub _ncpu { my $n = () = do { open my $f, '<', '/proc/cpuinfo' or return 1; grep { /^processor/ } <$f> }; $n || 1 }

sub nginx_t {
    my ($self) = @_;
    $self->_release_ports;
    # `nginx -t` exits without freeing its cycle by design: no leak checking for it
    local $ENV{ASAN_OPTIONS} = join(':', grep { length } $ENV{ASAN_OPTIONS} // '', 'detect_leaks=0');
    my $r = _run_capture([ $self->{nginx}, '-p', "$self->{prefix}/", '-c', 'conf/nginx.conf', '-t' ]);
    return ($r->{code}, $r->{out});
}

# ------------------------------------------------------------------ nginx process

sub master_pid { $_[0]{master} }

sub has_faketime { -f $FAKETIME_LIB }
sub set_clock {
    my ($self, $ts) = @_;
    die "DSM::Test: set_clock wants 'YYYY-MM-DD HH:MM:SS' (UTC)\n" unless $ts =~ /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/;
    $self->write_file('faketime', "$ts\n");
}

sub start {
    my ($self, %o) = @_;
    die "DSM::Test: write_conf first\n" unless defined $self->{conf};
    die "DSM::Test: %%FAKETIME%% needs libfaketime ($FAKETIME_LIB) and set_clock before start\n"
        if $self->{faketime} && !(-f $FAKETIME_LIB && -f "$self->{prefix}/faketime");
    die "DSM::Test: already running\n" if $self->{master};
    $self->_release_ports;
    my $p = $self->{prefix};
    my $err_off = -s "$p/logs/stderr.log" || 0;
    my $elog_off = -s "$p/logs/error.log" || 0;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$p/logs/stderr.log";
        open STDERR, '>>', "$p/logs/stderr.log";
        setpgrp(0, 0);
        _pdeathsig();
        if ($self->{faketime}) {
            # this nginx only runs on the fake clock (see set_clock)
            $ENV{LD_PRELOAD} = $FAKETIME_LIB;
            $ENV{FAKETIME_TIMESTAMP_FILE} = "$p/faketime";
            $ENV{FAKETIME_NO_CACHE} = 1;
            $ENV{DONT_FAKE_MONOTONIC} = 1;
            $ENV{TZ} = 'UTC';
            $ENV{ASAN_OPTIONS} = join(':', grep { length } $ENV{ASAN_OPTIONS} // '', 'verify_asan_link_order=0')
                if $self->{is_asan};
        }
        exec $self->{nginx}, '-p', "$p/", '-c', 'conf/nginx.conf' or POSIX::_exit(127);
    }
    $self->{master} = $pid;
    $self->{stopped} = 0;
    my $deadline = time + ($o{timeout} // ($self->{is_asan} ? 30 : 15));
    my @ports = @{ $self->{conf_ports} || [] };
    my $want = $self->{conf_master_off} ? 0 : ($self->{conf_workers} // $self->{workers});
    while (1) {
        my $w = waitpid($pid, WNOHANG);
        if ($w == $pid) {
            my $st = $?;
            delete $self->{master};
            $self->{stopped} = 1;
            # nginx returned from main() after a configuration error without freeing its
            # init cycle: LeakSanitizer reports of this aborted startup are not findings
            push @{ $self->{lsan_ignore} }, [ 'stderr.log', $err_off, -s "$p/logs/stderr.log" || 0 ],
                                            [ 'error.log', $elog_off, -s "$p/logs/error.log" || 0 ];
            die "DSM::Test: nginx exited during start (status $st):\n" . $self->read_log('stderr.log') . $self->read_log('error.log');
        }
        my $ready = 1;
        for my $port (@ports) {
            my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 1);
            if ($s) { close $s } else { $ready = 0; last }
        }
        $ready &&= (my @wp = $self->worker_pids) >= $want;
        last if $ready;
        if (time > $deadline) {
            die "DSM::Test: nginx did not become ready (ports @ports, workers $want)\n" . $self->read_log('stderr.log');
        }
        sleep 0.05;
    }
    return $self;
}

sub _proc_children {
    my ($ppid) = @_;
    my @r;
    opendir my $d, '/proc' or return;
    for my $e (readdir $d) {
        next unless $e =~ /^\d+$/;
        open my $f, '<', "/proc/$e/stat" or next;
        my $st = <$f>; close $f;
        next unless defined $st && $st =~ /\)\s+\S+\s+(\d+)/;
        next unless $1 == $ppid;
        my $cmd = '';
        if (open my $c, '<', "/proc/$e/cmdline") { local $/; $cmd = <$c> // ''; close $c; $cmd =~ tr/\0/ /; }
        push @r, [ $e + 0, $cmd ];
    }
    closedir $d;
    return @r;
}

# current workers (not those shutting down after a reload)
sub worker_pids {
    my ($self) = @_;
    return () unless $self->{master};
    return sort { $a <=> $b } map { $_->[0] } grep { $_->[1] =~ /worker process/ && $_->[1] !~ /shutting down/ }
        _proc_children($self->{master});
}

sub all_worker_pids {
    my ($self) = @_;
    return () unless $self->{master};
    return sort { $a <=> $b } map { $_->[0] } grep { $_->[1] =~ /worker process/ } _proc_children($self->{master});
}

sub signal_master { my ($self, $sig) = @_; return kill $sig, $self->{master} if $self->{master}; 0 }

sub reload {
    my ($self, %o) = @_;
    die "DSM::Test: not running\n" unless $self->{master};
    my %old = map { $_ => 1 } $self->worker_pids;
    my $want = $self->{conf_workers} // $self->{workers};
    kill 'HUP', $self->{master};
    my $deadline = time + ($o{timeout} // 15);
    while (time < $deadline) {
        my @now = $self->worker_pids;
        if (@now >= $want && !grep { $old{$_} } @now) {
            return 1;
        }
        sleep 0.05;
    }
    return 0;
}

sub _wait_exit {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $w = waitpid($pid, WNOHANG);
        return $? if $w == $pid;
        return -1 if $w == -1;
        sleep 0.05;
    }
    return undef;
}

sub stop_nginx {
    my ($self) = @_;
    my $pid = delete $self->{master} or return;
    my $st;
    kill 'QUIT', $pid;
    $st = _wait_exit($pid, $self->{is_asan} ? 20 : 10);
    if (!defined $st) {
        $self->{stop_problem} = "nginx master did not exit on SIGQUIT";
        kill 'TERM', $pid;
        $st = _wait_exit($pid, 5);
    }
    if (!defined $st) {
        $self->{stop_problem} = "nginx master did not exit on SIGQUIT/SIGTERM: killed";
        kill 'KILL', -$pid; kill 'KILL', $pid;
        $st = _wait_exit($pid, 5);
    }
    # leftover workers (should not happen): kill by PID from the process group
    if (defined $st && $st > 0) {
        $self->{stop_problem} //= "nginx master exit status " . (($st & 127) ? "signal " . ($st & 127) : "code " . ($st >> 8));
    }
    return $st;
}

sub stop {
    my ($self) = @_;
    $self->stop_nginx;
    $self->mock_stop;
    $self->{stopped} = 1;
    $self->_report;
    return $self;
}

# adds one failing test per log problem not reported before (so stop/start/stop works)
sub _report {
    my ($self) = @_;
    $self->{reported} = 1;
    if (my $pb = delete $self->{stop_problem}) {
        ok(0, "clean nginx shutdown: $pb");
    }
    my $n = 0;
    for my $line ($self->errors) {
        next if $self->{reported_lines}{$line}++;
        last if ++$n > 20;
        my $short = length $line > 300 ? substr($line, 0, 300) . '...' : $line;
        ok(0, "no alerts/sanitizer reports in logs: $short");
    }
}

# ------------------------------------------------------------------ logs

sub read_log {
    my ($self, $name) = @_;
    my $f = $name =~ m{/} ? $name : "$self->{prefix}/logs/$name";
    open my $fh, '<', $f or return '';
    local $/;
    my $c = <$fh>;
    close $fh;
    return $c // '';
}

sub log_offset { my ($self) = @_; return -s "$self->{prefix}/logs/error.log" || 0 }

sub log_since {
    my ($self, $off) = @_;
    my $c = $self->read_log('error.log');
    return length $c > ($off // 0) ? substr($c, $off // 0) : '';
}

my $BAD = qr/\[(?:alert|emerg|crit)\]|AddressSanitizer|runtime error|LeakSanitizer|exited on signal|exited with code [1-9]|ERROR: \w+Sanitizer/;

sub errors {
    my ($self) = @_;
    my @r;
    for my $f (qw(error.log stderr.log)) {
        my $text = $self->read_log($f);
        for my $rg (sort { $b->[1] <=> $a->[1] } grep { $_->[0] eq $f } @{ $self->{lsan_ignore} || [] }) {
            my ($from, $to) = @$rg[1, 2];
            next unless $to > $from && length $text >= $to;
            my $seg = substr($text, $from, $to - $from);
            $seg =~ s/^.*(?:LeakSanitizer|AddressSanitizer: \d+ byte\(s\) leaked).*$//mg;
            substr($text, $from, $to - $from) = $seg;
        }
        for my $line (split /\n/, $text) {
            next unless $line =~ $BAD;
            next if grep { $line =~ $_ } @{ $self->{allow} };
            push @r, "$f: $line";
        }
    }
    for my $line (split /\n/, $self->read_log('mock.err')) {
        next unless $line =~ /\S/;
        next if grep { $line =~ $_ } @{ $self->{allow} };
        push @r, "mock.err: $line";
    }
    return @r;
}

# ------------------------------------------------------------------ mock

sub mock_port {
    my ($self) = @_;
    die "DSM::Test: mock not started (call mock_start before write_conf)\n" unless $self->{mock_port};
    return $self->{mock_port};
}

sub mock_start {
    my ($self, %o) = @_;
    return $self if $self->{mock_pid};
    my $script = "$REPO/t/mock/deepseek-mock.js";
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        close $r;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $w or POSIX::_exit(127);
        open STDERR, '>>', "$self->{prefix}/logs/mock.err" or POSIX::_exit(127);
        _pdeathsig();
        exec $self->{node}, $script, '--port', ($o{port} // 0), @{ $o{args} || [] } or POSIX::_exit(127);
    }
    close $w;
    $self->{mock_pid} = $pid;
    $self->{mock_fh} = $r;
    my $sel = IO::Select->new($r);
    my $deadline = time + 15;
    my $buf = '';
    while (time < $deadline && $buf !~ /LISTENING (\d+)\n/) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($r, $buf, 4096, length $buf);
        last unless $n;
    }
    if ($buf =~ /LISTENING (\d+)\n/) {
        $self->{mock_port} = $1;
    } else {
        $self->mock_stop;
        die "DSM::Test: mock did not start: $buf\n" . $self->read_log('mock.err');
    }
    $self->{stopped} = 0 unless $self->{master};
    return $self;
}

sub mock_stop {
    my ($self) = @_;
    my $pid = delete $self->{mock_pid} or return;
    kill 'TERM', $pid;
    my $st = _wait_exit($pid, 5);
    if (!defined $st) { kill 'KILL', $pid; _wait_exit($pid, 5) }
    close delete $self->{mock_fh} if $self->{mock_fh};
}

sub mock_stats {
    my ($self) = @_;
    my $r = $self->http(GET => '/__mock/stats', port => $self->mock_port);
    return JSON::PP::decode_json($r->{body});
}

sub mock_reset {
    my ($self) = @_;
    $self->http(GET => '/__mock/reset', port => $self->mock_port);
}

# ------------------------------------------------------------------ HTTP client

sub http_raw {
    my ($self, $bytes, %o) = @_;
    my $port = $o{port} // $self->port('PORT');
    my $s = IO::Socket::IP->new(PeerHost => $o{host} // '127.0.0.1', PeerPort => $port, Proto => 'tcp',
                                Timeout => 5) or die "DSM::Test: connect 127.0.0.1:$port: $!\n";
    $s->autoflush(1);
    $s->syswrite($bytes);
    my $out = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + ($o{timeout} // 10);
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $out .= $buf;
    }
    close $s;
    return $out;
}

# GETs pipelined on keep-alive connections, 500 a connection; the number of
# responses with the given status
sub pipelined {
    my ($self, $status, @paths) = @_;
    my $ok = 0;
    while (my @batch = splice @paths, 0, 500) {
        my $req = '';
        for my $k (0 .. $#batch) {
            $req .= "GET $batch[$k] HTTP/1.1\r\nHost: x\r\n"
                . ($k == $#batch ? "Connection: close\r\n" : '') . "\r\n";
        }
        my $raw = $self->http_raw($req, timeout => 30);
        $ok += () = $raw =~ m{^HTTP/1\.1 $status }mg;
    }
    return $ok;
}

sub http {
    my ($self, $method, $path, %o) = @_;
    my $port = $o{port} // $self->port('PORT');
    my %h = %{ $o{headers} || {} };
    my %lc = map { lc($_) => $_ } keys %h;
    $h{'X-Mock'} = $o{mock} if defined $o{mock};
    $h{Host} = 'localhost' unless $lc{host};
    $h{Connection} = 'close' unless $lc{connection};
    my $body = $o{body};
    if (defined $body) {
        $h{'Content-Length'} = length($body) unless $lc{'content-length'} || $lc{'transfer-encoding'};
        $h{'Content-Type'} = 'application/json' unless $lc{'content-type'};
    }
    my $req = "$method $path " . ($o{http10} ? 'HTTP/1.0' : 'HTTP/1.1') . "\r\n"
        . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n" . ($body // '');

    my $s = IO::Socket::IP->new(PeerHost => $o{host} // '127.0.0.1', PeerPort => $port, Proto => 'tcp',
                                Timeout => 5) or die "DSM::Test: connect 127.0.0.1:$port: $!\n";
    $s->autoflush(1);
    my $t0 = time;
    $s->syswrite($req);
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $timeout = $o{timeout} // 10;
    my $deadline = $t0 + $timeout;
    my $close_at = defined $o{close_after} ? $t0 + $o{close_after} : undef;
    my ($first, $timed_out, $closed_early) = (undef, 0, 0);
    while (1) {
        my $now = time;
        if (defined $close_at && $now >= $close_at) { $closed_early = 1; last }
        if ($now >= $deadline) { $timed_out = 1; last }
        my $until = $deadline;
        $until = $close_at if defined $close_at && $close_at < $until;
        next unless $sel->can_read($until - $now);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $first //= time - $t0;
        $raw .= $buf;
        # HEAD / bodiless responses over Connection: close still end with EOF
    }
    close $s;
    my $res = { raw => $raw, elapsed => time - $t0, first_byte => $first, timeout => $timed_out,
                closed_early => $closed_early, status => 0, headers => {}, body => '' };
    my $he = index($raw, "\r\n\r\n");
    return $res if $he < 0;
    my ($status_line, @hl) = split /\r\n/, substr($raw, 0, $he);
    ($res->{status}) = $status_line =~ m{^HTTP/\d\.\d (\d{3})};
    $res->{status} //= 0;
    $res->{status_line} = $status_line;
    for (@hl) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $res->{headers}{$k} = exists $res->{headers}{$k} ? "$res->{headers}{$k}, $v" : $v;
    }
    my $b = substr($raw, $he + 4);
    if (($res->{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        my ($decoded, $complete) = _dechunk($b);
        $res->{body} = $decoded;
        $res->{chunked_complete} = $complete;
    } else {
        $res->{body} = $b;
    }
    return $res;
}

sub _dechunk {
    my ($b) = @_;
    my $out = '';
    while (1) {
        $b =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n// or return ($out, 0);
        my $n = hex $1;
        if ($n == 0) { return ($out, 1) }
        return ($out . $b, 0) if length($b) < $n;
        $out .= substr($b, 0, $n, '');
        $b =~ s/^\r\n// or return ($out, 0);
    }
}

sub chat {
    my ($self, %o) = @_;
    my $model  = delete $o{model} // 'deepseek-flash';
    my $stream = delete $o{stream} // 0;
    my $path   = delete $o{path} // '/chat/completions';
    my $extra  = delete $o{json} // {};
    my $body = JSON::PP->new->canonical->encode({
        model => $model, stream => $stream ? JSON::PP::true : JSON::PP::false,
        messages => [ { role => 'user', content => 'Hello' } ], %$extra });
    return $self->http(POST => $path, body => $body, %o);
}

sub scrape {
    my ($self, %o) = @_;
    my $accept = $o{accept} // 'text';
    my %h = %{ $o{headers} || {} };
    if ($accept eq 'openmetrics') { $h{Accept} = $PROM_ACCEPT }
    elsif ($accept eq 'text') { $h{Accept} = 'text/plain;version=0.0.4' }
    elsif ($accept ne 'none') { $h{Accept} = $accept }
    my $r = $self->http(GET => $o{path} // '/metrics', port => $o{port} // $self->port('METRICS_PORT'),
                        headers => \%h);
    die "DSM::Test: scrape returned status $r->{status}\n" . substr($r->{raw}, 0, 2000) . "\n"
        unless $r->{status} == 200;
    my $m = DSM::Metrics->parse($r->{body}, $r->{headers}{'content-type'} // '');
    $m->{response} = $r;
    return $m;
}

sub DSM::Metrics::response { $_[0]{response} }

# A client may read the end of a response before nginx runs the log phase
# (lingering close); the module gives the in-flight count back only after the
# request is counted, so scraping until nothing is in flight gives exact counts
# (bounded: 5 s, or settle => N). A gauge still above 0 at the deadline is a
# failed test (a leaked in-flight count), not a pass: the last scrape is
# returned after the failure so the caller's checks still run.
sub scrape_settled {
    my ($self, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;   # report the caller's line
    my $settle = delete $o{settle} // 5;
    my $m;
    $self->wait_until(sub {
        $m = $self->scrape(%o);
        return $m->value('deepseek_requests_in_flight') == 0;
    }, $settle, 'deepseek_requests_in_flight back to 0 after the traffic',
       sub { 'in flight: ' . join(', ', map { "$_->{labels}{endpoint}=$_->{value}" }
                                        grep { $_->{value} } $m->samples('deepseek_requests_in_flight')) });
    return $m;
}

# wait_until($cond, $seconds, $what, [$detail]): polls $cond every 50 ms until
# it returns true; true on success. On timeout it adds a failing test
# "timed out after N s waiting for: $what" (plus $detail->() as a diag) and
# returns false: a wait that ran out is never a silent pass.
sub wait_until {
    my ($self, $cond, $seconds, $what, $detail) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $deadline = time + $seconds;
    while (1) {
        return 1 if $cond->();
        last if time > $deadline;
        sleep 0.05;
    }
    Test::More::fail(sprintf('timed out after %g s waiting for: %s', $seconds, $what));
    Test::More::diag($detail->()) if $detail;
    return 0;
}

sub promtool_check {
    my ($self, $text) = @_;
    my $r = _run_capture([ 'promtool', 'check', 'metrics' ], $text, 60);
    return ($r->{code}, $r->{out});
}

# ------------------------------------------------------------------ cleanup

sub DESTROY { }

sub _cleanup_all {
    for my $t (@INSTANCES) {
        next unless $t;
        $t->stop if $t->{master} || $t->{mock_pid} || !$t->{reported};
        my $passing = Test::More->builder->is_passing;
        if ($t->{keep} || !$passing) {
            Test::More::diag("DSM::Test: prefix kept: $t->{prefix}");
        } else {
            remove_tree($t->{prefix});
        }
    }
    @INSTANCES = ();
}

END {
    my $exit = $?;
    _cleanup_all();
    $? = $exit;
}

1;
