#!/usr/bin/perl
# Scrape bytes and time per format (text 0.0.4, OpenMetrics, protobuf) at N
# label sets, with and without native histograms for latency and TTFT.
#
#   perl bench/formats.pl [label_sets=1000] [scrapes=20]
#
# Fills the zone with chat responses with usage (user label k=$arg_k, one
# label set each: requests_total, the latency histogram, 3 token series,
# reasoning), then times curl -o /dev/null -w '%{time_total}' for each format
# (no compression) and prints the median, and the bytes.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/../t/lib';
use DSM::Test;

my $N = shift // 1000;
my $SCRAPES = shift // 20;
my %ACCEPT = (
    text => 'text/plain;version=0.0.4',
    openmetrics => 'application/openmetrics-text;version=1.0.0',
    protobuf => 'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited',
);

for my $native ('', 'native=latency,ttft') {
    my $t = DSM::Test->new(workers => 1);
    $t->mock_start;
    $t->write_conf(<<"EOF");
%%MODULE%%
%%COMMON%%
http {
    deepseek_metrics_zone lab:64m $native;
    deepseek_metrics_label k \$arg_k;
    server {
        listen 127.0.0.1:%%PORT%%;
        deepseek_metrics lab;
        location / { proxy_pass http://127.0.0.1:%%MOCK_PORT%%; }
    }
    server {
        listen 127.0.0.1:%%METRICS_PORT%%;
        location = /metrics { deepseek_metrics_export lab; }
    }
}
EOF
    $t->start;
    $t->chat(path => "/chat/completions?k=$_") for 1 .. $N;
    my $url = 'http://127.0.0.1:' . $t->port('METRICS_PORT') . '/metrics';
    for my $f (qw(text openmetrics protobuf)) {
        my @times;
        my $bytes;
        for (1 .. $SCRAPES) {
            my $out = `curl -s -o /dev/null -H 'Accept: $ACCEPT{$f}' -w '%{time_total} %{size_download}' '$url'`;
            my ($time, $size) = split ' ', $out;
            push @times, $time;
            $bytes = $size;
        }
        @times = sort { $a <=> $b } @times;
        printf "%-22s %-12s %6d label sets  median %6.1f ms  %10d bytes\n", $native || 'classic only', $f, $N,
            1000 * $times[$#times / 2], $bytes;
    }
    $t->stop;
}
