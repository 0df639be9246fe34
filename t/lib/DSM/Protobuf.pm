package DSM::Protobuf;

=head1 NAME

DSM::Protobuf - strict decoder of delimited io.prometheus.client.MetricFamily messages

=head1 SYNOPSIS

    use DSM::Protobuf;
    my @fams = DSM::Protobuf->decode($body);   # dies on any violation
    # each: { name, help, type => 'counter'|'gauge'|'histogram', metrics => [
    #   { labels => {..}, value => N, created => S }                    # counter, gauge
    #   { labels => {..}, histogram => { count, sum, buckets => [[le, cum], ...],
    #       created, schema, zero_threshold, zero_count, spans => [[off, len], ...],
    #       deltas => [...] } } ] }
    my @s = DSM::Protobuf->samples(@fams);    # as text samples: { name, labels, value }
    my %b = DSM::Protobuf->native_buckets($h); # bucket index => count
    my @m = DSM::Protobuf->merge(@fams);       # split families made one (parts => N)
    my $k = DSM::Protobuf->sample_key($s);     # name{labels sorted}, le normalised
    # a bucket with an exemplar: [le, cum, { labels, value, timestamp }]

Field numbers from prometheus/client_model's metrics.proto. Rejected: truncated
varints or fields, a wrong wire type for a known field, unknown fields, a family
without metrics, labels repeated, a histogram whose native deltas and spans
disagree, non-monotone classic buckets.

=cut

use strict;
use warnings;
use Carp qw(croak);

my @TYPES = qw(counter gauge summary untyped histogram gaugehistogram);

sub _varint {
    my ($buf, $pos) = @_;
    my ($v, $shift) = (0, 0);
    while (1) {
        croak "protobuf: truncated varint at $$pos" if $$pos >= length $$buf;
        my $b = ord substr($$buf, $$pos++, 1);
        croak "protobuf: varint longer than 10 bytes" if $shift > 63;
        $v |= ($b & 0x7f) << $shift;
        return $v unless $b & 0x80;
        $shift += 7;
    }
}

# sint32/sint64: the unsigned shift first, then the sign
sub _zigzag { my $v = shift; my $h = $v >> 1; return ($v & 1) ? -$h - 1 : $h }

# fields of one message: [field, wiretype, value] (LEN: the bytes, I64: the double)
sub _fields {
    my ($buf) = @_;
    my ($pos, @f) = (0);
    while ($pos < length $buf) {
        my $key = _varint(\$buf, \$pos);
        my ($field, $wt) = ($key >> 3, $key & 7);
        croak "protobuf: field number 0" if $field == 0;
        if ($wt == 0) {
            push @f, [ $field, 0, _varint(\$buf, \$pos) ];
        } elsif ($wt == 1) {
            croak "protobuf: truncated fixed64" if $pos + 8 > length $buf;
            push @f, [ $field, 1, unpack('d<', substr($buf, $pos, 8)) ];
            $pos += 8;
        } elsif ($wt == 2) {
            my $len = _varint(\$buf, \$pos);
            croak "protobuf: truncated field $field ($len bytes)" if $pos + $len > length $buf;
            push @f, [ $field, 2, substr($buf, $pos, $len) ];
            $pos += $len;
        } else {
            croak "protobuf: wire type $wt (field $field)";
        }
    }
    return @f;
}

sub _want {
    my ($f, $wt, $msg) = @_;
    croak "protobuf: $msg field $f->[0] has wire type $f->[1], expected $wt" unless $f->[1] == $wt;
    return $f->[2];
}

sub _timestamp {
    my ($buf) = @_;
    my ($s, $ns) = (0, 0);
    for my $f (_fields($buf)) {
        if    ($f->[0] == 1) { $s  = _want($f, 0, 'Timestamp') }
        elsif ($f->[0] == 2) { $ns = _want($f, 0, 'Timestamp') }
        else { croak "protobuf: Timestamp field $f->[0]" }
    }
    return $s + $ns / 1e9;
}

# Exemplar: { labels => {..}, value, timestamp } (timestamp in seconds)
sub _exemplar {
    my ($buf) = @_;
    my %e = (labels => {}, value => 0);
    for my $f (_fields($buf)) {
        if ($f->[0] == 1) {
            my ($name, $value) = ('', '');
            for my $g (_fields(_want($f, 2, 'Exemplar'))) {
                if    ($g->[0] == 1) { $name = _want($g, 2, 'LabelPair') }
                elsif ($g->[0] == 2) { $value = _want($g, 2, 'LabelPair') }
                else { croak "protobuf: LabelPair field $g->[0]" }
            }
            croak "protobuf: exemplar label $name twice" if exists $e{labels}{$name};
            $e{labels}{$name} = $value;
        }
        elsif ($f->[0] == 2) { $e{value} = _want($f, 1, 'Exemplar') }
        elsif ($f->[0] == 3) { $e{timestamp} = _timestamp(_want($f, 2, 'Exemplar')) }
        else { croak "protobuf: Exemplar field $f->[0]" }
    }
    croak "protobuf: exemplar without labels" unless %{ $e{labels} };
    return \%e;
}

sub _packed_or_single {
    my ($f, $msg) = @_;
    return (_zigzag($f->[2])) if $f->[1] == 0;
    my $b = _want($f, 2, $msg);
    my ($pos, @v) = (0);
    push @v, _zigzag(_varint(\$b, \$pos)) while $pos < length $b;
    return @v;
}

sub _histogram {
    my ($buf) = @_;
    my %h = (count => 0, sum => 0, buckets => [], spans => [], deltas => []);
    for my $f (_fields($buf)) {
        my $n = $f->[0];
        if    ($n == 1)  { $h{count} = _want($f, 0, 'Histogram') }
        elsif ($n == 2)  { $h{sum} = _want($f, 1, 'Histogram') }
        elsif ($n == 3)  {
            my ($cum, $le, $ex) = (0, undef, undef);
            for my $g (_fields(_want($f, 2, 'Histogram'))) {
                if    ($g->[0] == 1) { $cum = _want($g, 0, 'Bucket') }
                elsif ($g->[0] == 2) { $le = _want($g, 1, 'Bucket') }
                elsif ($g->[0] == 3) { $ex = _exemplar(_want($g, 2, 'Bucket')) }
                else { croak "protobuf: Bucket field $g->[0]" }
            }
            croak "protobuf: Bucket without upper_bound" unless defined $le;
            push @{ $h{buckets} }, [ $le, $cum, defined $ex ? ($ex) : () ];
        }
        elsif ($n == 5)  { $h{schema} = _zigzag(_want($f, 0, 'Histogram')) }
        elsif ($n == 6)  { $h{zero_threshold} = _want($f, 1, 'Histogram') }
        elsif ($n == 7)  { $h{zero_count} = _want($f, 0, 'Histogram') }
        elsif ($n == 12) {
            my ($off, $len) = (0, 0);
            for my $g (_fields(_want($f, 2, 'Histogram'))) {
                if    ($g->[0] == 1) { $off = _zigzag(_want($g, 0, 'BucketSpan')) }
                elsif ($g->[0] == 2) { $len = _want($g, 0, 'BucketSpan') }
                else { croak "protobuf: BucketSpan field $g->[0]" }
            }
            push @{ $h{spans} }, [ $off, $len ];
        }
        elsif ($n == 13) { push @{ $h{deltas} }, _packed_or_single($f, 'Histogram') }
        # float counts: never from the module; Prometheus' /federate sends
        # native histograms so
        elsif ($n == 4)  { $h{count_float} = _want($f, 1, 'Histogram') }
        elsif ($n == 8)  { $h{zero_count_float} = _want($f, 1, 'Histogram') }
        elsif ($n == 14) {
            push @{ $h{counts} }, $f->[1] == 1 ? $f->[2] : unpack 'd<*', _want($f, 2, 'Histogram');
        }
        elsif ($n == 15) { $h{created} = _timestamp(_want($f, 2, 'Histogram')) }
        else { croak "protobuf: Histogram field $n" }
    }
    my ($prev_le, $prev) = (-9**9**9, 0);
    for my $b (@{ $h{buckets} }) {
        croak "protobuf: bucket upper bounds not increasing" unless $b->[0] > $prev_le;
        croak "protobuf: bucket counts decreasing" if $b->[1] < $prev;
        ($prev_le, $prev) = @$b;
    }
    croak "protobuf: last bucket above sample_count" if $prev > $h{count};
    my $n = 0;
    $n += $_->[1] for @{ $h{spans} };
    # integer deltas (the module) or float counts (/federate), never both
    my @c = @{ $h{counts} || [] };
    croak "protobuf: deltas and float counts" if @c && @{ $h{deltas} };
    croak "protobuf: $n span buckets, " . scalar(@c ? @c : @{ $h{deltas} }) . " deltas"
        unless $n == (@c ? @c : @{ $h{deltas} });
    return \%h;
}

sub _metric {
    my ($buf, $type) = @_;
    my %m = (labels => {});
    for my $f (_fields($buf)) {
        my $n = $f->[0];
        if ($n == 1) {
            my ($name, $value) = ('', '');
            for my $g (_fields(_want($f, 2, 'Metric'))) {
                if    ($g->[0] == 1) { $name = _want($g, 2, 'LabelPair') }
                elsif ($g->[0] == 2) { $value = _want($g, 2, 'LabelPair') }
                else { croak "protobuf: LabelPair field $g->[0]" }
            }
            croak "protobuf: label $name twice" if exists $m{labels}{$name};
            $m{labels}{$name} = $value;
        } elsif ($n == 2 || $n == 3) {
            croak "protobuf: a $type metric with a " . ($n == 2 ? 'gauge' : 'counter')
                unless $type eq ($n == 2 ? 'gauge' : 'counter');
            $m{value} = 0;
            for my $g (_fields(_want($f, 2, 'Metric'))) {
                if    ($g->[0] == 1) { $m{value} = _want($g, 1, 'value') }
                elsif ($g->[0] == 3 && $n == 3) { $m{created} = _timestamp(_want($g, 2, 'Counter')) }
                else { croak "protobuf: Counter/Gauge field $g->[0]" }
            }
        } elsif ($n == 7) {
            croak "protobuf: a $type metric with a histogram" unless $type eq 'histogram';
            $m{histogram} = _histogram(_want($f, 2, 'Metric'));
        } elsif ($n == 5) {
            # untyped: never from the module; Prometheus' /federate sends
            # every float series so
            croak "protobuf: a $type metric untyped" unless $type eq 'untyped';
            $m{value} = 0;
            for my $g (_fields(_want($f, 2, 'Metric'))) {
                if ($g->[0] == 1) { $m{value} = _want($g, 1, 'value') }
                else { croak "protobuf: Untyped field $g->[0]" }
            }
        } elsif ($n == 6) {
            # timestamp_ms: never from the module; Prometheus' /federate sets it
            $m{timestamp_ms} = _want($f, 0, 'Metric');
        } else {
            croak "protobuf: Metric field $n";
        }
    }
    croak "protobuf: a $type metric without its value"
        unless exists $m{value} || exists $m{histogram};
    return \%m;
}

sub decode {
    my ($class, $body) = @_;
    my ($pos, @fams) = (0);
    while ($pos < length $body) {
        my $len = _varint(\$body, \$pos);
        croak "protobuf: truncated MetricFamily ($len bytes at $pos)" if $pos + $len > length $body;
        my $buf = substr($body, $pos, $len);
        $pos += $len;
        my %fam = (name => '', help => '', type => 'counter', metrics => []);
        my @raw;
        for my $f (_fields($buf)) {
            if    ($f->[0] == 1) { $fam{name} = _want($f, 2, 'MetricFamily') }
            elsif ($f->[0] == 2) { $fam{help} = _want($f, 2, 'MetricFamily') }
            elsif ($f->[0] == 3) { $fam{type} = $TYPES[_want($f, 0, 'MetricFamily')] // croak "protobuf: type" }
            elsif ($f->[0] == 4) { push @raw, _want($f, 2, 'MetricFamily') }
            else { croak "protobuf: MetricFamily field $f->[0]" }
        }
        croak "protobuf: family $fam{name} without metrics" unless @raw;
        $fam{metrics} = [ map { _metric($_, $fam{type}) } @raw ];
        push @fams, \%fam;
    }
    return @fams;
}

# the samples the text format shows for these families; le as a number
sub samples {
    my ($class, @fams) = @_;
    my @s;
    for my $f (@fams) {
        for my $m (@{ $f->{metrics} }) {
            my $h = $m->{histogram};
            unless ($h) {
                push @s, { name => $f->{name}, labels => { %{ $m->{labels} } }, value => $m->{value} };
                next;
            }
            # an explicit "+Inf" bucket (it carries an exemplar) stands for itself
            my @b = @{ $h->{buckets} };
            push @b, [ 9**9**9, $h->{count} ] unless @b && $b[-1][0] == 9**9**9;
            for my $b (@b) {
                push @s, { name => "$f->{name}_bucket", labels => { %{ $m->{labels} }, le => $b->[0] },
                           value => $b->[1] };
            }
            push @s, { name => "$f->{name}_sum", labels => { %{ $m->{labels} } }, value => $h->{sum} };
            push @s, { name => "$f->{name}_count", labels => { %{ $m->{labels} } }, value => $h->{count} };
        }
    }
    return @s;
}

# a sample's identity, text or protobuf alike: name{labels sorted}, le as a
# number written back the same way
sub sample_key {
    my ($class, $s) = @_;
    my %l = %{ $s->{labels} };
    $l{le} = sprintf('%.17g', $l{le}) if exists $l{le};
    return $s->{name} . '{' . join(',', map { "$_=\"$l{$_}\"" } sort keys %l) . '}';
}

# a family split into several MetricFamily messages made one again, in
# the order of first appearance; the parts must agree on help and type
sub merge {
    my ($class, @fams) = @_;
    my (%by, @out);
    for my $f (@fams) {
        if (my $m = $by{ $f->{name} }) {
            croak "protobuf: parts of $f->{name} disagree on help or type"
                unless $m->{help} eq $f->{help} && $m->{type} eq $f->{type};
            push @{ $m->{metrics} }, @{ $f->{metrics} };
            $m->{parts}++;
            next;
        }
        my %copy = (%$f, metrics => [ @{ $f->{metrics} } ], parts => 1);
        $by{ $f->{name} } = \%copy;
        push @out, \%copy;
    }
    return @out;
}

# native bucket index => count (absolute), from spans and deltas
sub native_buckets {
    my ($class, $h) = @_;
    my (%b, $idx, $count);
    my @d = @{ $h->{deltas} };
    ($idx, $count) = (0, 0);
    for my $sp (@{ $h->{spans} }) {
        $idx += $sp->[0];
        for (1 .. $sp->[1]) {
            $count += shift @d;
            croak "protobuf: negative bucket count" if $count < 0;
            $b{$idx} = $count if $count;
            $idx++;
        }
    }
    return %b;
}

1;
