#!/usr/bin/perl
# Monitoring stack, federation (the seed article's cross-cluster setup):
# two nginx instances with the module, two edge Prometheus servers (one per
# nginx, examples/prometheus/edge.yml), one global Prometheus federating both
# (examples/prometheus/global.yml: honor_labels, match[] {job="deepseek-api"}).
# The global sum of deepseek_requests_total equals the requests sent.
#
# The example files are used as shipped except: targets -> the local ports,
# intervals 15s -> 1s, rule_files -> absolute paths, edge cluster label -> a/b.
use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/lib', dirname(abs_path(__FILE__)) . '/../tools/lib';
use JSON::PP ();
use Time::HiRes qw(time sleep);
use DSM::Test;
use DSM::Stack;

my $REPO = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $MODULE = $ENV{DSM_MODULE} // "$REPO/build/modules/ngx_http_deepseek_metrics_module.so";
plan skip_all => "module not built ($MODULE)" unless -f $MODULE || (defined $ENV{DSM_MODULE} && $ENV{DSM_MODULE} eq '');
plan skip_all => 'prometheus not installed' unless system('command -v prometheus >/dev/null') == 0;

my $JSON = JSON::PP->new->canonical;
my $dir = DSM::Stack::tempdir();

# ---------------------------------------------------------------- two nginx
my %nginx;
for my $c (qw(a b)) {
    my $t = DSM::Test->new(workers => 2);
    $t->mock_start;
    $t->write_conf(DSM::Stack::live_conf());
    $t->start;
    $nginx{$c} = $t;
}

# ---------------------------------------------------------------- two edges, one global
my $edge_yml = DSM::Stack::slurp("$REPO/examples/prometheus/edge.yml");
my $global_yml = DSM::Stack::slurp("$REPO/examples/prometheus/global.yml");
sub fast {
    my ($y) = @_;
    $y =~ s/^(\s*(?:scrape|evaluation)_interval:\s*)15s/${1}1s/mg;
    $y =~ s{\.\./\.\./alerting/}{$REPO/alerting/}g;
    return $y;
}
my %edge;
for my $c (qw(a b)) {
    my $y = fast($edge_yml);
    my $port = $nginx{$c}->port('METRICS_PORT');
    $y =~ s/targets: \['nginx-a1:9145', 'nginx-a2:9145'\]/targets: ['127.0.0.1:$port']/ or die 'edge.yml targets not found';
    $y =~ s/cluster: edge-a/cluster: edge-$c/ or die 'edge.yml cluster label not found';
    $edge{$c} = DSM::Stack->prometheus(dir => $dir, name => "edge-$c", config => $y);
}
my $g = fast($global_yml);
$g =~ s/'prometheus-edge-a:9090'/'127.0.0.1:$edge{a}{port}'/ or die 'global.yml edge-a target not found';
$g =~ s/'prometheus-edge-b:9090'/'127.0.0.1:$edge{b}{port}'/ or die 'global.yml edge-b target not found';
like($g, qr/honor_labels: true/, 'global.yml: honor_labels');
like($g, qr/'\{job="deepseek-api"\}'/, 'global.yml: match[] {job="deepseek-api"}');
my $global = DSM::Stack->prometheus(dir => $dir, name => 'global', config => $g);

# ---------------------------------------------------------------- traffic: a known number of requests
my %sent = (a => 0, b => 0);
for (1 .. 2) { $sent{a} += DSM::Stack::traffic_round($nginx{a}) }
$sent{b} += DSM::Stack::traffic_round($nginx{b});
for my $i (1 .. 7) { $nginx{b}->chat(stream => $i % 2); $sent{b}++ }
my $total = $sent{a} + $sent{b};
note "sent: a=$sent{a} b=$sent{b} total=$total";

# every request is finished (499/504 cases included) before we compare
for my $c (qw(a b)) {
    DSM::Stack::wait_for('in flight 0', 10, sub {
        $nginx{$c}->scrape->value('deepseek_requests_in_flight') == 0;
    });
}

my $sum = 'sum(deepseek_requests_total{job="deepseek-api"})';
for my $c (qw(a b)) {
    my $v = DSM::Stack::wait_for("edge $c", 30, sub {
        my $x = $edge{$c}->value($sum); defined $x && $x == $sent{$c} ? $x : undef });
    is($v, $sent{$c}, "edge-$c sees the $sent{$c} requests sent to nginx $c");
}
my $gv = DSM::Stack::wait_for('global sum', 40, sub {
    my $x = $global->value($sum); defined $x && $x == $total ? $x : undef });
is($gv, $total, "global: $sum == $total requests sent") or diag 'global has ' . ($global->value($sum) // 'nothing');

# labels survive federation (honor_labels): job/instance as on the edges, cluster from each edge
my $by = eval { $global->query('sum by (cluster) (deepseek_requests_total{job="deepseek-api"})') } || [];
my %by = map { ($_->{metric}{cluster} // '') => $_->{value}[1] } @$by;
is_deeply(\%by, { 'edge-a' => $sent{a}, 'edge-b' => $sent{b} }, 'per-cluster sums on the global server')
    or diag $JSON->encode($by);
my $inst = eval { $global->query('count by (instance) (deepseek_requests_total{job="deepseek-api"})') } || [];
is(scalar(@$inst), 2, 'two instances (nginx a and b) on the global server, job="deepseek-api" kept');
my $fed = eval { $global->query('deepseek_requests_total{job="federate"}') } || [1];
is(scalar(@$fed), 0, 'no series relabelled to job="federate"');

# the article's queries on the global server
for my $q ('sum(rate(deepseek_requests_total{status="500"}[5m])) / sum(rate(deepseek_requests_total[5m]))',
           'histogram_quantile(0.99, sum(rate(deepseek_request_latency_seconds_bucket[5m])) by (le))') {
    my $res = DSM::Stack::wait_for('article query', 20, sub { my $r = $global->query($q); @$r ? $r : undef });
    ok($res, "global server: $q");
}

$_->stop for $global, values %edge;
$_->stop for values %nginx;
done_testing;
