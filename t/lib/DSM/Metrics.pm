package DSM::Metrics;

=head1 NAME

DSM::Metrics - strict parser for Prometheus text 0.0.4 and OpenMetrics 1.0.0 expositions

=head1 SYNOPSIS

    use DSM::Metrics;
    my $m = DSM::Metrics->parse($body, $content_type);   # dies on any violation
    $m->value('deepseek_requests_total', { endpoint => 'chat_completions', status => '200' });
    my @s = $m->samples('deepseek_request_latency_seconds_bucket', { endpoint => 'models' });
    my @f = $m->families;          # family names, exposition order
    $m->type('deepseek_requests_total');   # 'counter' (text) ; OM family is 'deepseek_requests'
    $m->help($family); $m->format; $m->raw; $m->family_of($sample_name);

The content type decides the format: C<application/openmetrics-text...> is OpenMetrics
1.0.0, anything else the Prometheus text format 0.0.4 (C<< format => 'openmetrics' >>
or C<'text'> may be passed instead of a content type).

=head1 WHAT IS REJECTED (dies with "metrics parse error: line N: ...")

=over

=item * malformed lines: bad metric/label names, missing value, junk after the value,
unterminated label sets, bad floats; OM: blank lines, separators other than one space,
trailing comma in label sets, comments other than HELP/TYPE/UNIT

=item * exemplars (OM only, C<< value # {labels} value [timestamp] >>): anywhere but on a
counter's C<_total> or a histogram's C<_bucket>; separators other than one space; a label
set that breaks the sample label rules or whose names and values exceed 128 UTF-8
characters together; a bad value or timestamp; on a bucket, a value outside
C<(previous le, le]>. A parsed exemplar is C<< $sample->{exemplar} >> =
C<< { labels => {...}, value => N, ts => N or undef } >>; C<< $m->exemplars($name, \%match) >>
lists the samples that have one

=item * bad escapes: label values accept only C<\\ \" \n>; HELP (text) only C<\\ \n>,
(OM) C<\\ \" \n>; label values that are not valid UTF-8

=item * label names not matching C<[a-zA-Z_][a-zA-Z0-9_]*>, or starting with C<__>,
duplicate label names within one sample

=item * duplicate HELP or TYPE (or UNIT) for one family; HELP/TYPE after the family's samples

=item * non-contiguous families: a sample (or metadata) of a family after another family began

=item * duplicate series (same sample name and label set)

=item * suffix rules: text counters must be named C<*_total> and their samples too; OM counter
families must not end in C<_total> and their samples must be C<family_total> / C<family_created>;
gauge samples carry the bare name; histogram samples are C<_bucket>, C<_sum>, C<_count>
(+ C<_created> in OM); summary C<name{quantile}>, C<_sum>, C<_count>; negative counters

=item * histograms: every series has C<_bucket> samples with strictly increasing C<le>,
cumulative non-decreasing counts, C<le="+Inf"> present and equal to C<_count>, C<_count> and
C<_sum> present; no C<le> label on C<_sum>/C<_count>

=item * OM: missing C<# EOF>, or anything after it; text: last line without C<\n>

=back

=cut

use strict;
use warnings;
use Carp qw(croak);

my $NAME_RE  = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $LABEL_RE = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
my %TEXT_TYPES = map { $_ => 1 } qw(counter gauge histogram summary untyped);
my %OM_TYPES   = map { $_ => 1 } qw(counter gauge histogram gaugehistogram summary stateset info unknown);

sub parse {
    my ($class, $text, $ctype) = @_;
    croak "DSM::Metrics->parse: undefined exposition" unless defined $text;
    my $fmt = 'text';
    if (defined $ctype) {
        $fmt = 'openmetrics' if $ctype eq 'openmetrics' || $ctype =~ m{^\s*application/openmetrics-text}i;
    }
    my $self = bless {
        raw => $text, format => $fmt, content_type => $ctype,
        families => [],            # order
        fam => {},                 # name => { type, help, unit, samples => [...] }
        samples => [],             # all samples in order
        series_seen => {},
    }, $class;
    $self->_parse;
    $self->_check_histograms;
    return $self;
}

sub raw          { $_[0]{raw} }
sub format       { $_[0]{format} }
sub content_type { $_[0]{content_type} }
sub families     { @{ $_[0]{families} } }
sub type         { my ($s, $f) = @_; return $s->{fam}{$f} ? $s->{fam}{$f}{type} : undef }
sub help         { my ($s, $f) = @_; return $s->{fam}{$f} ? $s->{fam}{$f}{help} : undef }
sub unit         { my ($s, $f) = @_; return $s->{fam}{$f} ? $s->{fam}{$f}{unit} : undef }
sub all_samples  { @{ $_[0]{samples} } }

sub family_of {
    my ($s, $name) = @_;
    for my $x ($s->all_samples) { return $x->{family} if $x->{name} eq $name }
    return undef;
}

sub _match {
    my ($x, $name, $match) = @_;
    return 0 if defined $name && $x->{name} ne $name;
    for my $k (keys %{ $match || {} }) {
        return 0 unless exists $x->{labels}{$k};
        my $want = $match->{$k};
        if (ref $want eq 'Regexp') { return 0 unless $x->{labels}{$k} =~ $want }
        else { return 0 unless $x->{labels}{$k} eq $want }
    }
    return 1;
}

# samples($sample_name, \%match): list of { name, family, labels => {...}, value, line }
sub samples {
    my ($s, $name, $match) = @_;
    return grep { _match($_, $name, $match) } $s->all_samples;
}

# value: sum of matching samples' values (0 when none match)
sub value {
    my ($s, $name, $match) = @_;
    my $sum = 0;
    $sum += $_->{value} for $s->samples($name, $match);
    return $sum;
}

sub count { my ($s, $name, $match) = @_; return scalar $s->samples($name, $match) }

# exemplars: the matching samples that carry one
sub exemplars {
    my ($s, $name, $match) = @_;
    return grep { $_->{exemplar} } $s->samples($name, $match);
}

# ------------------------------------------------------------------ parser

sub _die {
    my ($s, $ln, $msg, $line) = @_;
    my $shown = defined $line ? $line : '';
    $shown =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    $shown = substr($shown, 0, 200) . '...' if length $shown > 200;
    die "metrics parse error ($s->{format}): line $ln: $msg" . (defined $line ? ": '$shown'" : '') . "\n";
}

sub _unescape {
    my ($s, $ln, $str, $allowed, $line, $what) = @_;
    my $out = '';
    my $i = 0;
    while ($i < length $str) {
        my $c = substr($str, $i, 1);
        if ($c eq '\\') {
            my $n = substr($str, $i + 1, 1);
            $s->_die($ln, "bad escape '\\$n' in $what", $line) unless length $n && index($allowed, $n) >= 0;
            $out .= $n eq 'n' ? "\n" : $n;
            $i += 2;
            next;
        }
        $out .= $c;
        $i++;
    }
    return $out;
}

sub _family_for_sample {
    my ($s, $name) = @_;
    my $om = $s->{format} eq 'openmetrics';
    # exact family
    if (my $f = $s->{fam}{$name}) {
        my $t = $f->{type};
        return $name if !$t || $t eq 'gauge' || $t eq 'untyped' || $t eq 'unknown' || $t eq 'summary'
                        || ($t eq 'counter' && !$om) || $t eq 'stateset';
    }
    my @suffixes = (
        [ '_total',   [qw(counter)] ],
        [ '_created', [qw(counter histogram summary gaugehistogram)] ],
        [ '_bucket',  [qw(histogram gaugehistogram)] ],
        [ '_count',   [qw(histogram summary)] ],
        [ '_sum',     [qw(histogram summary)] ],
        [ '_gcount',  [qw(gaugehistogram)] ],
        [ '_gsum',    [qw(gaugehistogram)] ],
        [ '_info',    [qw(info)] ],
    );
    for my $sf (@suffixes) {
        my ($suf, $types) = @$sf;
        next unless $name =~ /^(.+)\Q$suf\E$/;
        my $base = $1;
        my $f = $s->{fam}{$base} or next;
        next unless $f->{type};
        next if $suf eq '_total' && !$om;            # text counters carry their full name
        next if $suf eq '_created' && !$om;
        next if $suf eq '_info' && !$om;
        return $base if grep { $_ eq $f->{type} } @$types;
    }
    return undef;
}

sub _open_family {
    my ($s, $ln, $name, $line) = @_;
    my $f = $s->{fam}{$name};
    if (!$f) {
        $f = $s->{fam}{$name} = { name => $name, type => undef, help => undef, unit => undef,
                                   samples => [], closed => 0, has_samples => 0 };
        push @{ $s->{families} }, $name;
    }
    if (defined $s->{current} && $s->{current} ne $name) {
        $s->{fam}{ $s->{current} }{closed} = 1;
    }
    $s->_die($ln, "family '$name' is not contiguous (appears again after another family)", $line)
        if $f->{closed};
    $s->{current} = $name;
    return $f;
}

sub _parse {
    my ($s) = @_;
    my $om   = $s->{format} eq 'openmetrics';
    my $text = $s->{raw};

    if ($om) {
        $s->_die(0, "missing '# EOF' terminator") unless $text =~ /(?:^|\n)# EOF\n?\z/;
        # anything after a # EOF line elsewhere is caught below
    } else {
        $s->_die(0, "exposition does not end with a newline") if length $text && substr($text, -1) ne "\n";
    }

    my @lines = split /\n/, $text, -1;
    pop @lines if @lines && $lines[-1] eq '';   # trailing newline
    my $ln = 0;
    my $eof = 0;
    for my $line (@lines) {
        $ln++;
        $s->_die($ln, "content after '# EOF'", $line) if $eof;
        if ($line =~ /\r/) { $s->_die($ln, "carriage return in line", $line) }
        if ($line eq '') {
            $s->_die($ln, "blank line", $line) if $om;
            next;
        }
        if ($om && $line eq '# EOF') { $eof = 1; next }
        if ($line =~ /^#/) { $s->_meta($ln, $line); next }
        $s->_sample($ln, $line);
    }
    $s->_die($ln, "missing '# EOF' terminator") if $om && !$eof;
}

sub _meta {
    my ($s, $ln, $line) = @_;
    my $om = $s->{format} eq 'openmetrics';
    my ($kw, $rest);
    if ($om) {
        $line =~ /^# (HELP|TYPE|UNIT) (.*)$/s
            or $s->_die($ln, "OpenMetrics allows only '# HELP', '# TYPE', '# UNIT', '# EOF' comments", $line);
        ($kw, $rest) = ($1, $2);
    } else {
        if ($line =~ /^#[ \t]+(HELP|TYPE)[ \t]+(.*)$/s) { ($kw, $rest) = ($1, $2) }
        elsif ($line =~ /^#[ \t]*(HELP|TYPE)[ \t]*$/) { $s->_die($ln, "$1 line without metric name", $line) }
        else { return }   # plain comment
    }
    my ($name, $arg);
    if ($om) {
        $rest =~ /^($NAME_RE)(?: (.*))?$/s or $s->_die($ln, "bad metric name in $kw", $line);
        ($name, $arg) = ($1, $2);
    } else {
        $rest =~ /^($NAME_RE)(?:[ \t]+(.*))?$/s or $s->_die($ln, "bad metric name in $kw", $line);
        ($name, $arg) = ($1, $2);
    }
    $arg = '' unless defined $arg;
    my $f = $s->_open_family($ln, $name, $line);
    $s->_die($ln, "$kw for '$name' after its samples", $line) if $f->{has_samples};
    if ($kw eq 'HELP') {
        $s->_die($ln, "duplicate HELP for '$name'", $line) if defined $f->{help};
        $f->{help} = $s->_unescape($ln, $arg, $om ? '\\n"' : '\\n', $line, 'HELP');
    } elsif ($kw eq 'TYPE') {
        $s->_die($ln, "duplicate TYPE for '$name'", $line) if defined $f->{type};
        my $types = $om ? \%OM_TYPES : \%TEXT_TYPES;
        $arg =~ s/[ \t]+$// unless $om;
        $s->_die($ln, "unknown metric type '$arg'", $line) unless $types->{$arg};
        if ($om) {
            $s->_die($ln, "OpenMetrics counter family '$name' must not end in _total", $line)
                if $arg eq 'counter' && $name =~ /_total$/;
            $s->_die($ln, "OpenMetrics info family '$name' must not end in _info", $line)
                if $arg eq 'info' && $name =~ /_info$/;
        } else {
            $s->_die($ln, "text-format counter '$name' must be named *_total", $line)
                if $arg eq 'counter' && $name !~ /_total$/;
        }
        $f->{type} = $arg;
    } else {
        $s->_die($ln, "duplicate UNIT for '$name'", $line) if defined $f->{unit};
        $f->{unit} = $arg;
        $s->_die($ln, "UNIT '$arg' is not a suffix of '$name'", $line)
            if length $arg && $name !~ /_\Q$arg\E$/;
    }
}

sub _parse_float {
    my ($s, $ln, $v, $line) = @_;
    return 9**9**9  if $v eq '+Inf' || $v eq 'Inf' || $v eq '+inf';
    return -9**9**9 if $v eq '-Inf' || $v eq '-inf';
    if ($v eq 'NaN') { my $inf = 9**9**9; return -sin($inf) * 0 + ($inf - $inf) }
    $v =~ /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/ or $s->_die($ln, "bad sample value '$v'", $line);
    return $v + 0;
}

sub _sample {
    my ($s, $ln, $line) = @_;
    my $om = $s->{format} eq 'openmetrics';
    my $pos = 0;
    $line =~ /\G($NAME_RE)/gc or $s->_die($ln, "malformed line (no metric name)", $line);
    my $name = $1;
    my %labels;
    my @order;
    if ($line =~ /\G\{/gc) {
        my $first = 1;
        while (1) {
            $line =~ /\G[ \t]*/gc unless $om;
            if ($line =~ /\G\}/gc) {
                $s->_die($ln, "trailing comma in label set", $line) if $om && !$first && $s->{_last_comma};
                last;
            }
            if (!$first) {
                $s->_die($ln, "malformed label set (missing ',')", $line) unless $s->{_last_comma};
            }
            $line =~ /\G([^=\s{},"]*)/gc;
            my $lname = $1;
            $s->_die($ln, "invalid label name '$lname'", $line) unless length $lname && $lname =~ /^$LABEL_RE$/;
            $s->_die($ln, "reserved label name '$lname'", $line) if $lname =~ /^__/;
            $line =~ /\G[ \t]*/gc unless $om;
            $line =~ /\G="/gc or $line =~ /\G=[ \t]*"/gc && !$om
                or $s->_die($ln, "malformed label '$lname' (expected =\"...\")", $line);
            $line =~ /\G((?:[^"\\]|\\.)*)"/gcs or $s->_die($ln, "unterminated label value for '$lname'", $line);
            my $raw = $1;
            my $val = $s->_unescape($ln, $raw, '\\"n', $line, "label value of '$lname'");
            my $chk = $val;
            $s->_die($ln, "label value of '$lname' is not valid UTF-8", $line) unless utf8::decode($chk);
            $s->_die($ln, "duplicate label name '$lname'", $line) if exists $labels{$lname};
            $labels{$lname} = $val;
            push @order, $lname;
            $first = 0;
            $line =~ /\G[ \t]*/gc unless $om;
            $s->{_last_comma} = ($line =~ /\G,/gc) ? 1 : 0;
        }
        $s->{_last_comma} = 0;
    }
    my $rest = substr($line, pos($line) // length($name));
    my ($value, $ts, $exemplar);
    if ($om) {
        if ($rest =~ /^(.*?) # (.*)$/s) {
            $rest = $1;
            $exemplar = $s->_exemplar($ln, $2, $line);
        }
        $rest =~ /^ (\S+)(?: (\S+))?$/ or $s->_die($ln, "malformed sample (expected ' value [timestamp]')", $line);
        ($value, $ts) = ($1, $2);
    } else {
        $rest =~ /^[ \t]+(\S+)(?:[ \t]+(\S+))?[ \t]*$/ or $s->_die($ln, "malformed sample (expected ' value [timestamp]')", $line);
        ($value, $ts) = ($1, $2);
    }
    my $v = $s->_parse_float($ln, $value, $line);
    if (defined $ts) {
        if ($om) { $ts =~ /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/ or $s->_die($ln, "bad timestamp '$ts'", $line) }
        else     { $ts =~ /^-?\d+$/ or $s->_die($ln, "bad timestamp '$ts'", $line) }
    }

    # family resolution and suffix rules
    my $famname = $s->_family_for_sample($name);
    if (!defined $famname) {
        if ($s->{fam}{$name} && $s->{fam}{$name}{type}) {
            my $t = $s->{fam}{$name}{type};
            $s->_die($ln, "sample '$name' does not match the suffix rules of its $t family", $line);
        }
        # untyped sample without metadata (text) / unknown (OM)
        $famname = $name;
        # a sample whose name belongs to a family of another type by suffix
        for my $suf (qw(_total _bucket _count _sum _created _info)) {
            if ($name =~ /^(.+)\Q$suf\E$/ && $s->{fam}{$1} && $s->{fam}{$1}{type}) {
                $s->_die($ln, "sample '$name' does not match the suffix rules of family '$1' ($s->{fam}{$1}{type})", $line);
            }
        }
    }
    my $f = $s->_open_family($ln, $famname, $line);
    my $type = $f->{type} // ($om ? 'unknown' : 'untyped');
    if ($type eq 'counter') {
        if ($om) {
            $s->_die($ln, "OpenMetrics counter sample '$name' must be '${famname}_total' or '${famname}_created'", $line)
                unless $name eq "${famname}_total" || $name eq "${famname}_created";
        } else {
            $s->_die($ln, "text counter sample '$name' must be named like its family '$famname'", $line)
                unless $name eq $famname;
        }
        $s->_die($ln, "negative counter value", $line) if $v < 0;
    } elsif ($type eq 'gauge' || $type eq 'untyped' || $type eq 'unknown') {
        $s->_die($ln, "$type sample '$name' must be named '$famname'", $line) unless $name eq $famname;
    } elsif ($type eq 'histogram' || $type eq 'gaugehistogram') {
        my @ok = $type eq 'histogram' ? qw(_bucket _sum _count) : qw(_bucket _gsum _gcount);
        push @ok, '_created' if $om && $type eq 'histogram';
        my ($suf) = grep { $name eq $famname . $_ } @ok;
        $s->_die($ln, "$type sample '$name' must be one of " . join(', ', map { $famname . $_ } @ok), $line)
            unless $suf;
        if ($suf eq '_bucket') {
            $s->_die($ln, "bucket without 'le' label", $line) unless exists $labels{le};
        } else {
            $s->_die($ln, "'le' label on '$name'", $line) if exists $labels{le};
        }
        $s->_die($ln, "negative histogram value", $line) if $suf ne '_sum' && $suf ne '_gsum' && $v < 0;
    } elsif ($type eq 'summary') {
        my @ok = ('', '_sum', '_count', ($om ? '_created' : ()));
        my ($suf) = grep { $name eq $famname . $_ } @ok;
        $s->_die($ln, "summary sample '$name' not allowed", $line) unless defined $suf;
        $s->_die($ln, "summary sample without 'quantile'", $line) if $suf eq '' && !exists $labels{quantile};
    } elsif ($type eq 'info') {
        $s->_die($ln, "info sample '$name' must be '${famname}_info'", $line) unless $name eq "${famname}_info";
    }

    my $key = $name . '{' . join(',', map { "$_=\"$labels{$_}\"" } sort keys %labels) . '}';
    $s->_die($ln, "duplicate series $key", $line) if $s->{series_seen}{$key}++;
    if ($exemplar) {
        $s->_die($ln, "exemplar on '$name': only a counter's _total or a histogram's _bucket may have one", $line)
            unless ($type eq 'counter' && $name eq "${famname}_total")
                || (($type eq 'histogram' || $type eq 'gaugehistogram') && $name eq "${famname}_bucket");
    }
    my $x = { name => $name, family => $famname, labels => \%labels, value => $v, line => $ln, order => \@order };
    $x->{exemplar} = $exemplar if $exemplar;
    $f->{has_samples} = 1;
    push @{ $f->{samples} }, $x;
    push @{ $s->{samples} }, $x;
}

# the part after ' # ': '{labels} value [timestamp]', one space between, strictly
sub _exemplar {
    my ($s, $ln, $ex, $line) = @_;
    $ex =~ /\G\{/gc or $s->_die($ln, "exemplar without a label set", $line);
    my (%labels, $chars);
    $chars = 0;
    my $empty = $ex =~ /\G\}/gc;
    while (!$empty) {
        $ex =~ /\G([^=\s{},"]*)="((?:[^"\\]|\\.)*)"/gcs
            or $s->_die($ln, "malformed exemplar label", $line);
        my ($lname, $raw) = ($1, $2);
        $s->_die($ln, "invalid exemplar label name '$lname'", $line) unless $lname =~ /^$LABEL_RE$/;
        $s->_die($ln, "reserved exemplar label name '$lname'", $line) if $lname =~ /^__/;
        my $val = $s->_unescape($ln, $raw, '\\"n', $line, "exemplar label value of '$lname'");
        my $chk = $val;
        $s->_die($ln, "exemplar label value of '$lname' is not valid UTF-8", $line) unless utf8::decode($chk);
        $s->_die($ln, "duplicate exemplar label name '$lname'", $line) if exists $labels{$lname};
        $labels{$lname} = $val;
        $chars += length($lname) + length($chk);
        last if $ex =~ /\G\}/gc;
        $ex =~ /\G,/gc or $s->_die($ln, "malformed exemplar label set (missing ',' or '}')", $line);
        $s->_die($ln, "trailing comma in exemplar label set", $line) if $ex =~ /\G\}/;
    }
    $s->_die($ln, "exemplar label set has $chars characters, more than 128", $line) if $chars > 128;
    my $rest = substr($ex, pos($ex));
    $rest =~ /^ (\S+)(?: (\S+))?$/ or $s->_die($ln, "malformed exemplar (expected '{labels} value [timestamp]')", $line);
    my ($value, $ts) = ($1, $2);
    my $v = $s->_parse_float($ln, $value, $line);
    if (defined $ts) {
        $ts =~ /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/ or $s->_die($ln, "bad exemplar timestamp '$ts'", $line);
    }
    return { labels => \%labels, value => $v, ts => $ts, line => $ln };
}

sub _check_histograms {
    my ($s) = @_;
    for my $fname ($s->families) {
        my $f = $s->{fam}{$fname};
        next unless $f->{type} && ($f->{type} eq 'histogram' || $f->{type} eq 'gaugehistogram');
        my $cnt = $f->{type} eq 'histogram' ? '_count' : '_gcount';
        my $sum = $f->{type} eq 'histogram' ? '_sum' : '_gsum';
        my %series;
        for my $x (@{ $f->{samples} }) {
            my %l = %{ $x->{labels} };
            my $le = delete $l{le};
            my $k = join(',', map { "$_=\"$l{$_}\"" } sort keys %l);
            my $e = $series{$k} ||= { buckets => [], line => $x->{line} };
            if ($x->{name} eq "${fname}_bucket") { push @{ $e->{buckets} }, [ $le, $x->{value}, $x->{line}, $x->{exemplar} ] }
            elsif ($x->{name} eq "$fname$cnt") { $e->{count} = $x->{value} }
            elsif ($x->{name} eq "$fname$sum") { $e->{sum} = $x->{value} }
        }
        for my $k (sort keys %series) {
            my $e = $series{$k};
            my $where = "histogram $fname\{$k\}";
            $s->_die($e->{line}, "$where has no buckets") unless @{ $e->{buckets} };
            my ($prev_le, $prev_v);
            for my $b (@{ $e->{buckets} }) {
                my ($le, $v, $bl) = @$b;
                my $lev = $s->_parse_float($bl, $le, "le=\"$le\"");
                $s->_die($bl, "$where: le=\"$le\" not in increasing order") if defined $prev_le && !($lev > $prev_le);
                $s->_die($bl, "$where: bucket le=\"$le\" ($v) < previous bucket ($prev_v): not cumulative")
                    if defined $prev_v && $v < $prev_v;
                if (my $x = $b->[3]) {
                    $s->_die($bl, "$where: exemplar value $x->{value} above le=\"$le\"")
                        if $x->{value} > $lev;
                    $s->_die($bl, "$where: exemplar value $x->{value} not above the previous le")
                        if defined $prev_le && !($x->{value} > $prev_le);
                }
                ($prev_le, $prev_v) = ($lev, $v);
            }
            my $last = $e->{buckets}[-1];
            $s->_die($last->[2], "$where: no le=\"+Inf\" bucket") unless $last->[0] eq '+Inf';
            $s->_die($e->{line}, "$where: no ${fname}$cnt sample") unless defined $e->{count};
            $s->_die($e->{line}, "$where: no ${fname}$sum sample") unless defined $e->{sum};
            $s->_die($last->[2], "$where: le=\"+Inf\" bucket ($last->[1]) != $cnt ($e->{count})")
                unless $last->[1] == $e->{count};
        }
    }
}

1;
