package DSM::Timed;

# A client that records when each byte of a response arrived, and a helper
# that runs clients concurrently in forked children (t/21-timing.t,
# t/22-passthrough.t).
#
#   my $r = DSM::Timed::request(port => P, path => '/chat/completions',
#                               body => $json, mock => 'delay_ms=300', id => 'x');
#   $r->{status}, $r->{headers}{...}, $r->{body} (de-chunked), $r->{complete}
#   (the chunked body ended with its last chunk), $r->{elapsed},
#   DSM::Timed::arrival($r, $offset): seconds until body byte $offset arrived.
#   my $res = DSM::Timed::par($dir, name => sub { ... }, ...): {name => result}

use strict;
use warnings;
use IO::Socket::IP;
use IO::Select;
use JSON::PP ();
use Test::More ();
use POSIX ();
use Time::HiRes qw(time sleep);

my $JSON = JSON::PP->new->canonical;

sub request {
    my (%o) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $o{port}, Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    my $body = $o{body} // '';
    my $method = $o{method} // 'POST';
    my $post = $method eq 'POST';
    my $req = "$method $o{path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . ($post ? "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n" : '')
        . (defined $o{mock} ? "X-Mock: $o{mock}\r\n" : '')
        . (defined $o{id} ? "X-Req-Id: $o{id}\r\n" : '')
        . "\r\n" . ($post ? $body : '');
    my $t0 = time;
    $s->syswrite($req);
    my ($raw, @tl) = ('');
    my $sel = IO::Select->new($s);
    my $deadline = $t0 + ($o{timeout} // 20);
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
        push @tl, [ time - $t0, length $raw ];
    }
    close $s;
    my $he = index($raw, "\r\n\r\n");
    my %r = (status => 0, headers => {}, body => '', dec => [], complete => 1, elapsed => time - $t0);
    return \%r if $he < 0;
    my ($sl, @hl) = split /\r\n/, substr($raw, 0, $he);
    ($r{status}) = $sl =~ m{^HTTP/\d\.\d (\d+)};
    for (@hl) { my ($k, $v) = /^([^:]+):\s*(.*)$/ or next; $r{headers}{lc $k} = $v }
    my $b0 = $he + 4;
    my @chunks;    # [raw_start, len]
    if (($r{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        my $p = $b0;
        $r{complete} = 0;
        while (1) {
            my $le = index($raw, "\r\n", $p);
            last if $le < 0;
            my $n = hex substr($raw, $p, $le - $p);
            if ($n == 0) { $r{complete} = 1; last }
            push @chunks, [ $le + 2, $n ];
            $r{body} .= substr($raw, $le + 2, $n);
            $p = $le + 2 + $n + 2;
        }
    } else {
        push @chunks, [ $b0, length($raw) - $b0 ];
        $r{body} = substr($raw, $b0);
    }
    # (time, decoded body bytes available by then)
    for my $e (@tl) {
        my $avail = 0;
        for my $c (@chunks) {
            my $have = $e->[1] - $c->[0];
            $avail += $have <= 0 ? 0 : $have > $c->[1] ? $c->[1] : $have;
        }
        push @{ $r{dec} }, [ $e->[0], $avail ];
    }
    return \%r;
}

# arrival time of decoded byte offset $off (the first time it was available)
sub arrival {
    my ($r, $off) = @_;
    for (@{ $r->{dec} }) { return $_->[0] if $_->[1] > $off }
    return undef;
}

# runs jobs [name => coderef] in forked children, concurrently; returns {name => result}
sub par {
    my ($dir, @jobs) = @_;
    my %pid;
    while (my ($name, $code) = splice @jobs, 0, 2) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            $SIG{$_} = 'DEFAULT' for qw(INT TERM PIPE HUP ALRM);
            my $res = eval { $code->() } // { error => "$@" };
            open my $fh, '>', "$dir/par-$name.json" or POSIX::_exit(1);
            print $fh $JSON->encode($res);
            close $fh;
            POSIX::_exit(0);
        }
        $pid{$pid} = $name;
    }
    my $deadline = time + 60;
    while (%pid && time < $deadline) {
        my $p = waitpid(-1, POSIX::WNOHANG());
        if ($p > 0) { delete $pid{$p}; next }
        sleep 0.02;
    }
    # a job that ran out of time is a failed test, not a missing result
    Test::More::fail("par: job $pid{$_} still running after 60 s, killed") for sort keys %pid;
    kill 'KILL', $_ for keys %pid;
    waitpid($_, 0) for keys %pid;
    my %res;
    for my $f (glob "$dir/par-*.json") {
        my ($name) = $f =~ /par-(.+)\.json$/;
        open my $fh, '<', $f or next;
        local $/;
        $res{$name} = $JSON->decode(<$fh>);
        close $fh;
        unlink $f;
    }
    return \%res;
}

1;
