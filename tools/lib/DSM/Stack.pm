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

# the configuration of a Prometheus that scrapes one metrics port every second
sub scrape_config {
    my ($port) = @_;
    return <<"EOF";
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: 'deepseek-api'
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF
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
        $SIG{$_} = 'DEFAULT' for qw(INT HUP ALRM QUIT);
        alarm 0;
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

# ---------------------------------------------------------------- nginx conf

# The nginx configuration of the live stack tests (DSM::Test placeholders):
# the mock upstream on /, a dead upstream on /dead/ (502), a 1 s read timeout
# on /slow/ (504), prices (cost metrics), and a metrics listener with
# allow/deny, gzip and a scrape log recording what Prometheus negotiated (and
# the query string, which tells two Prometheus scraping the same target apart).
sub live_conf {
    my (%o) = @_;
    my $zone = $o{zone_size} // '10m';
    my $extra = $o{http_extra} // '';
    return <<"EOF";
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone deepseek:$zone;
    deepseek_metrics_price deepseek-flash USD hit=0.006 miss=0.30 output=1.20 offpeak_hit=0.003 offpeak_miss=0.15 offpeak_output=0.60;
    deepseek_metrics_price deepseek-v4-pro USD hit=0.044 miss=1.32 output=3.96 offpeak_hit=0.022 offpeak_miss=0.66 offpeak_output=1.98;
    deepseek_metrics_price deepseek-reasoner CNY hit=0.30 miss=9 output=27 offpeak_hit=0.15 offpeak_miss=4.5 offpeak_output=13.5;
    log_format scrape '\$http_user_agent|\$http_accept|\$sent_http_content_type|\$sent_http_content_encoding|\$status|\$args';
$extra
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics deepseek;
        proxy_set_header Accept-Encoding "";
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%;
            proxy_read_timeout 30s;
        }
        location /dead/ {
            proxy_pass http://127.0.0.1:1/;
        }
        location /slow/ {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_read_timeout 1s;
        }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        access_log %%PREFIX%%/logs/scrape.log scrape;
        gzip on;
        gzip_types text/plain application/openmetrics-text;
        gzip_min_length 100;
        location = /metrics {
            deepseek_metrics_export;
            allow 127.0.0.1;
            deny all;
        }
    }
}
EOF
}

# ---------------------------------------------------------------- traffic

# One round of mixed traffic through nginx (a DSM::Test $t whose conf has the
# locations of live_conf()): streaming and not, every endpoint, HTTP errors,
# in-band failures, usage-missing causes. Returns the number of requests sent.
sub traffic_round {
    my ($t, %o) = @_;
    my $n = 0;
    my $chat = sub { $n++; eval { $t->chat(timeout => 5, @_) } };
    my $http = sub { $n++; eval { $t->http(@_, timeout => 5) } };
    # ok traffic
    $chat->() for 1 .. 3;
    $chat->(stream => 1) for 1 .. 2;
    $chat->(stream => 1, model => 'deepseek-v4-pro', mock => 'chunks=6;delay_ms=20');
    $chat->(stream => 1, model => 'deepseek-reasoner', mock => 'keepalive_ms=300;keepalive_every_ms=100');
    $chat->(model => 'deepseek-v4-pro', mock => 'hit=100;miss=20;completion=200');
    $http->(GET => '/models');
    $http->(GET => '/user/balance');
    $http->(POST => '/beta/completions', body => '{"model":"deepseek-flash","prompt":"def f(","suffix":"return 1"}');
    $http->(POST => '/anthropic/v1/messages',
            body => '{"model":"deepseek-flash","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}');
    return $n if $o{ok_only};
    # HTTP errors
    $chat->(mock => "status=$_") for qw(400 401 402 429 500 503);
    $n++; eval { $t->chat(path => '/dead/chat/completions', timeout => 5) };          # 502
    $n++; eval { $t->chat(path => '/slow/chat/completions', mock => 'sleep_ms=1500', timeout => 5) };  # 504
    # in-band failures under a 200
    $chat->(stream => 1, mock => 'truncate_events=2');
    $chat->(stream => 1, mock => 'queue_timeout_ms=200;keepalive_every_ms=50');
    $chat->(stream => 1, mock => 'finish=content_filter');
    $chat->(mock => 'finish=insufficient_system_resource');
    $chat->(stream => 1, mock => 'empty=1');
    # usage missing: compressed, absent, client abort (499)
    $chat->(mock => 'gzip=1');
    $chat->(mock => 'no_usage=1');
    $chat->(stream => 1, mock => 'chunks=10;delay_ms=200', close_after => 0.3);
    return $n;
}

# Run $code repeatedly in a child until $seconds elapsed (or killed); returns
# the child's PID. The child leaves with POSIX::_exit so no END block (the
# parent's nginx/mock cleanup) runs in it.
sub background {
    my ($seconds, $code) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        # the harness's signal handlers (stop nginx, clean up) must not run here
        $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP ALRM QUIT);
        alarm 0;
        eval { require 'syscall.ph'; syscall(&SYS_prctl, 1, 9, 0, 0, 0) };
        my $deadline = time + $seconds;
        while (time < $deadline) { eval { $code->() }; sleep 0.05 }
        POSIX::_exit(0);
    }
    push @PROCS, $pid;
    return $pid;
}

sub stop_pid { _kill($_[0]) if $_[0] }

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
