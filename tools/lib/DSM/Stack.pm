package DSM::Stack;

# Helpers for the monitoring-stack tests (t/4*.t): run real Prometheus,
# Alertmanager and a webhook receiver on 127.0.0.1 with private directories,
# query them, and stop them by PID. Used together with t/lib/DSM/Test.pm (nginx
# + mock). Every wait is bounded; every process started here is killed at exit.
#
#   use lib 't/lib', 'tools/lib';
#   use DSM::Stack;
#   my $dir  = DSM::Stack::tempdir();
#   my $prom = DSM::Stack->prometheus(dir => $dir, config => $yaml, args => [...]);
#   my $res  = $prom->query('up');             # decoded "data" of /api/v1/query
#   my $am   = DSM::Stack->alertmanager(dir => $dir, config => $yaml);
#   my $hook = DSM::Stack->webhook(dir => $dir);  $hook->posts  # decoded JSON bodies
#   $prom->stop;  (also at END)

use strict;
use warnings;

use IO::Socket::IP;
use IO::Select;
use HTTP::Tiny;
use JSON::PP ();
use POSIX qw(:sys_wait_h);
use File::Temp ();
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);

our @PROCS;
my $JSON = JSON::PP->new->canonical->utf8;

sub tempdir {
    my $d = File::Temp::tempdir('dsm-stack-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{DSM_KEEP});
    chmod 0755, $d;
    return $d;
}

# A free TCP port on 127.0.0.1 (bound and released; good enough for
# tests that start their server right away).
my %GIVEN;
sub free_port {
    for (1 .. 50) {
        my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 1, ReuseAddr => 1)
            or die "free_port: $!";
        my $p = $s->sockport;
        close $s;
        next if $GIVEN{$p}++;
        return $p;
    }
    die "free_port: no port";
}

sub _spawn {
    my (%o) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $o{log} or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
        # die with the test (PR_SET_PDEATHSIG = 1, SIGKILL = 9)
        eval { require 'syscall.ph'; syscall(&SYS_prctl, 1, 9, 0, 0, 0) };
        exec @{ $o{cmd} } or POSIX::_exit(127);
    }
    push @PROCS, $pid;
    return $pid;
}

sub _wait_http {
    my ($url, $timeout, $pid, $log) = @_;
    my $http = HTTP::Tiny->new(timeout => 2);
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $r = $http->get($url);
        return 1 if $r->{success};
        if ($pid && waitpid($pid, WNOHANG) == $pid) {
            die "process $pid exited while starting; log:\n" . _slurp($log);
        }
        sleep 0.2;
    }
    die "timeout waiting for $url; log:\n" . _slurp($log);
}

sub _slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub _write {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh;
}

# ---------------------------------------------------------------- Prometheus

sub prometheus {
    my ($class, %o) = @_;
    my $name = $o{name} // 'prometheus';
    my $dir = "$o{dir}/$name";
    make_path("$dir/data");
    my $port = $o{port} // free_port();
    _write("$dir/prometheus.yml", $o{config});
    my $self = bless { name => $name, dir => $dir, port => $port, url => "http://127.0.0.1:$port",
                       log => "$dir/prometheus.log", config => "$dir/prometheus.yml" }, $class;
    $self->{pid} = _spawn(log => $self->{log}, cmd => [
        $o{binary} // 'prometheus',
        "--config.file=$dir/prometheus.yml",
        "--storage.tsdb.path=$dir/data",
        "--web.listen-address=127.0.0.1:$port",
        '--log.level=warn',
        @{ $o{args} || [] },
    ]);
    _wait_http("$self->{url}/-/ready", 60, $self->{pid}, $self->{log});
    return $self;
}

sub url { $_[0]{url} }
sub port { $_[0]{port} }
sub pid { $_[0]{pid} }
sub log_text { _slurp($_[0]{log}) }

sub api {
    my ($self, $path, %params) = @_;
    my $http = HTTP::Tiny->new(timeout => 20);
    my @pairs;
    for my $k (sort keys %params) {
        my $v = $params{$k};
        push @pairs, map { _esc($k) . '=' . _esc($_) } ref $v ? @$v : ($v);
    }
    my $url = "$self->{url}$path" . (@pairs ? '?' . join('&', @pairs) : '');
    my $r = $http->get($url);
    my $body = eval { $JSON->decode($r->{content}) };
    return { status => 'error', errorType => 'http', error => "HTTP $r->{status}: $r->{content}" } unless $body;
    return $body;
}

# /api/v1/query: returns the decoded response ({status, data => {resultType, result}, error})
sub query_raw {
    my ($self, $expr, %o) = @_;
    return $self->api('/api/v1/query', query => $expr, %o);
}

# result list of an instant query, or dies with Prometheus' error
sub query {
    my ($self, $expr) = @_;
    my $r = $self->query_raw($expr);
    die "query failed: $expr: " . ($r->{error} // 'unknown') . "\n" unless $r->{status} eq 'success';
    my $d = $r->{data};
    return $d->{resultType} eq 'scalar' ? [ { value => $d->{result} } ] : $d->{result};
}

# first value of an instant query (number) or undef
sub value {
    my ($self, $expr) = @_;
    my $res = eval { $self->query($expr) } or return undef;
    return undef unless @$res;
    return $res->[0]{value}[1];
}

sub wait_for {
    my ($what, $timeout, $cond) = @_;
    my $deadline = time + $timeout;
    my $last;
    while (time < $deadline) {
        $last = eval { $cond->() };
        return $last if $last;
        sleep 0.5;
    }
    return undef;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    _kill($pid);
}

sub _kill {
    my ($pid) = @_;
    kill 'TERM', $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        my $w = waitpid($pid, WNOHANG);
        if ($w == $pid || $w == -1) { @PROCS = grep { $_ != $pid } @PROCS; return 1 }
        sleep 0.1;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    @PROCS = grep { $_ != $pid } @PROCS;
    return 0;
}

# ---------------------------------------------------------------- Alertmanager

sub alertmanager {
    my ($class, %o) = @_;
    my $dir = "$o{dir}/" . ($o{name} // 'alertmanager');
    make_path("$dir/data");
    my $port = $o{port} // free_port();
    _write("$dir/alertmanager.yml", $o{config});
    my $self = bless { name => 'alertmanager', dir => $dir, port => $port, url => "http://127.0.0.1:$port",
                       log => "$dir/alertmanager.log" }, $class;
    $self->{pid} = _spawn(log => $self->{log}, cmd => [
        $o{binary} // 'prometheus-alertmanager',
        "--config.file=$dir/alertmanager.yml",
        "--storage.path=$dir/data",
        "--web.listen-address=127.0.0.1:$port",
        '--cluster.listen-address=',
        '--log.level=info',
        @{ $o{args} || [] },
    ]);
    _wait_http("$self->{url}/-/ready", 60, $self->{pid}, $self->{log});
    return $self;
}

# ---------------------------------------------------------------- webhook receiver

# A tiny HTTP server (forked Perl) that appends every POST body as one line to
# a file and answers 200. ->posts returns the decoded bodies so far.
sub webhook {
    my ($class, %o) = @_;
    my $dir = "$o{dir}/" . ($o{name} // 'webhook');
    make_path($dir);
    my $file = "$dir/posts.jsonl";
    _write($file, '');
    my $srv = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 16, ReuseAddr => 1)
        or die "webhook listen: $!";
    my $port = $srv->sockport;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        eval { require 'syscall.ph'; syscall(&SYS_prctl, 1, 9, 0, 0, 0) };
        $SIG{TERM} = sub { POSIX::_exit(0) };
        while (my $c = $srv->accept) {
            my $buf = '';
            my $sel = IO::Select->new($c);
            my $deadline = time + 5;
            while (time < $deadline && $buf !~ /\r\n\r\n/) {
                last unless $sel->can_read($deadline - time);
                my $n = sysread($c, $buf, 65536, length $buf) or last;
            }
            my ($head, $body) = split /\r\n\r\n/, $buf, 2;
            $body //= '';
            my ($len) = ($head // '') =~ /^content-length:\s*(\d+)/mi;
            while (defined $len && length($body) < $len && time < $deadline) {
                last unless $sel->can_read($deadline - time);
                my $n = sysread($c, $body, 65536, length $body) or last;
            }
            if (($head // '') =~ /^POST /) {
                $body =~ s/\n/ /g;
                open my $fh, '>>', $file;
                print $fh "$body\n";
                close $fh;
            }
            print $c "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            close $c;
        }
        POSIX::_exit(0);
    }
    close $srv;
    push @PROCS, $pid;
    return bless { name => 'webhook', pid => $pid, port => $port, url => "http://127.0.0.1:$port/alerts",
                   file => $file, log => $file }, $class;
}

sub posts {
    my ($self) = @_;
    return [ map { $JSON->decode($_) } grep { length } split /\n/, _slurp($self->{file}) ];
}

END {
    my $st = $?;
    for my $pid (@PROCS) { kill 'TERM', $pid }
    my $deadline = time + 5;
    for my $pid (@PROCS) {
        while (time < $deadline && waitpid($pid, WNOHANG) == 0) { sleep 0.1 }
        if (waitpid($pid, WNOHANG) == 0) { kill 'KILL', $pid; waitpid($pid, 0) }
    }
    @PROCS = ();
    $? = $st;
}

# ---------------------------------------------------------------- misc

sub _esc {
    my ($s) = @_;
    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# Replace a YAML file's text with substitutions: list of [qr//, replacement]
sub slurp { _slurp($_[0]) }

1;
