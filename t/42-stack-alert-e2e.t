#!/usr/bin/perl
# Monitoring stack, alert end to end: the mock DeepSeek upstream starts failing
# (X-Mock status=500) -> Prometheus fires HighErrorRate -> Alertmanager delivers
# it to a local webhook receiver -> the failures stop -> the alert resolves and
# the receiver gets the resolved notification.
#
# Prometheus loads a test copy of alerting/rules/deepseek-alerts.yml in which
# only the time constants are shortened (every `for:` -> 0s, the [5m]/[10m]
# windows -> [10s]) so the test takes seconds, not minutes; the expressions,
# labels and annotations are the shipped ones. Alertmanager runs the shipped
# alerting/alertmanager.yml with the webhook URL pointed at the receiver and
# group_wait/group_interval at 1s (its e-mail receiver points at a closed port).
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
for my $bin (qw(prometheus prometheus-alertmanager)) {
    plan skip_all => "$bin not installed" unless system("command -v $bin >/dev/null") == 0;
}

my $JSON = JSON::PP->new->canonical;
my $dir = DSM::Stack::tempdir();

# ---------------------------------------------------------------- test copies of the shipped configs
my $alerts = DSM::Stack::slurp("$REPO/alerting/rules/deepseek-alerts.yml");
(my $fast = $alerts) =~ s/^(\s+for:\s*)\S+/${1}0s/mg;
$fast =~ s/\[(5m|10m)\]/[10s]/g;
ok($fast =~ /- alert: HighErrorRate/ && $fast ne $alerts, 'test copy of the alert rules (for: 0s, 10s windows)');
DSM::Stack::_write("$dir/alerts-fast.yml", $fast);

my $hook = DSM::Stack->webhook(dir => $dir);
my $amconf = DSM::Stack::slurp("$REPO/alerting/alertmanager.yml");
$amconf =~ s{url: 'http://127\.0\.0\.1:9099/alerts'}{url: '$hook->{url}'} or die 'webhook url not found in alertmanager.yml';
$amconf =~ s/^(\s*group_wait:\s*)\S+/${1}1s/mg;
$amconf =~ s/^(\s*group_interval:\s*)\S+/${1}1s/mg;
$amconf =~ s/^(\s*smtp_smarthost:\s*)\S+/${1}'127.0.0.1:1'/m;
my $am = DSM::Stack->alertmanager(dir => $dir, config => $amconf);
ok($am, "Alertmanager up on $am->{url}");

my $t = DSM::Test->new(workers => 2);
$t->mock_start;
$t->write_conf(DSM::Stack::live_conf());
$t->start;

my $metrics = $t->port('METRICS_PORT');
my $prom = DSM::Stack->prometheus(dir => $dir, args => ['--rules.alert.resend-delay=1s'], config => <<"EOF");
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $REPO/alerting/rules/deepseek-recording.yml
  - $dir/alerts-fast.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$am->{port}']
scrape_configs:
  - job_name: 'deepseek-api'
    static_configs:
      - targets: ['127.0.0.1:$metrics']
EOF

sub firing {
    my ($name) = @_;
    my $r = $prom->api('/api/v1/alerts');
    return grep { $_->{labels}{alertname} eq $name && $_->{state} eq 'firing' } @{ $r->{data}{alerts} || [] };
}
sub notifications {
    my ($name, $status) = @_;
    return grep { $_->{status} eq $status && grep { $_->{labels}{alertname} eq $name } @{ $_->{alerts} } } @{ $hook->posts };
}

# ---------------------------------------------------------------- healthy traffic
my $ok = sub { $t->chat for 1 .. 3; $t->chat(stream => 1) };
my $bg = DSM::Stack::background(20, $ok);
my $up = DSM::Stack::wait_for('target up', 20, sub { ($prom->value('up{job="deepseek-api"}') // 0) == 1 });
ok($up, 'Prometheus scrapes the module');
sleep 5;
ok(!firing('HighErrorRate'), 'HighErrorRate quiet while the upstream is healthy');
DSM::Stack::stop_pid($bg);

# ---------------------------------------------------------------- the upstream fails
my $t0 = time;
$bg = DSM::Stack::background(60, sub { $t->chat for 1 .. 2; $t->chat(mock => 'status=500') for 1 .. 2 });
my $fired = DSM::Stack::wait_for('HighErrorRate firing', 45, sub { firing('HighErrorRate') });
ok($fired, sprintf('Prometheus fires HighErrorRate (%.1fs after the failures started)', time - $t0))
    or diag 'targets: ' . $JSON->encode($prom->api('/api/v1/targets')->{data}{activeTargets})
          . "\nalerts: " . $JSON->encode($prom->api('/api/v1/alerts')->{data})
          . "\nratio: " . $JSON->encode($prom->query_raw('sum by (job) (rate(deepseek_requests_total{status=~"5.."}[10s])) / sum by (job) (rate(deepseek_requests_total[10s]))'))
          . "\nrequests: " . $JSON->encode($prom->query_raw('deepseek_requests_total'));
DSM::Stack::wait_for('webhook notified', 30, sub { scalar notifications('HighErrorRate', 'firing') });
my $n;
$n = (notifications('HighErrorRate', 'firing'))[0];
ok($n, sprintf('Alertmanager delivers HighErrorRate to the webhook (%.1fs)', time - $t0))
    or diag 'posts: ' . $JSON->encode($hook->posts) . "\nalertmanager log:\n" . $am->log_text;
if ($n) {
    my ($a) = grep { $_->{labels}{alertname} eq 'HighErrorRate' } @{ $n->{alerts} };
    is($n->{receiver}, 'oncall-pager', 'routed to the critical receiver');
    is($a->{labels}{severity}, 'critical', 'severity critical');
    is($a->{labels}{job}, 'deepseek-api', 'job label');
    like($a->{annotations}{description}, qr/is \d+(\.\d+)?% over/, "description shows a percentage: $a->{annotations}{description}");
    like($a->{annotations}{runbook_url}, qr/runbook\.md#higherrorrate$/, 'runbook_url');
}
DSM::Stack::stop_pid($bg);

# ---------------------------------------------------------------- failures stop
my $t1 = time;
$bg = DSM::Stack::background(90, $ok);
my $resolved = DSM::Stack::wait_for('resolved notification', 75, sub { notifications('HighErrorRate', 'resolved') });
ok($resolved, sprintf('the webhook gets HighErrorRate resolved (%.1fs after the failures stopped)', time - $t1))
    or diag 'posts: ' . $JSON->encode($hook->posts);
ok(!firing('HighErrorRate'), 'HighErrorRate no longer firing in Prometheus');
DSM::Stack::stop_pid($bg);

# ---------------------------------------------------------------- inhibition: upstream down
# nginx cannot reach DeepSeek (502): DeepSeekUpstreamUnavailable and HighErrorRate
# both fire; the shipped inhibit rule suppresses HighErrorRate in Alertmanager.
my $t2 = time;
$bg = DSM::Stack::background(60, sub { $t->chat; $t->chat(path => '/dead/chat/completions') for 1 .. 3 });
my $both = DSM::Stack::wait_for('both firing', 45, sub { firing('DeepSeekUpstreamUnavailable') && firing('HighErrorRate') });
ok($both, sprintf('502s: DeepSeekUpstreamUnavailable and HighErrorRate fire in Prometheus (%.1fs)', time - $t2));
my $inhibited = DSM::Stack::wait_for('inhibited in Alertmanager', 30, sub {
    my $r = DSM::Stack::api($am, '/api/v2/alerts');
    my ($h) = grep { $_->{labels}{alertname} eq 'HighErrorRate' } @{ ref $r eq 'ARRAY' ? $r : [] };
    my ($u) = grep { $_->{labels}{alertname} eq 'DeepSeekUpstreamUnavailable' } @{ ref $r eq 'ARRAY' ? $r : [] };
    return $h && $u && $h->{status}{state} eq 'suppressed' && @{ $h->{status}{inhibitedBy} || [] }
        && $u->{status}{state} eq 'active' ? $h : undef;
});
ok($inhibited, 'Alertmanager inhibits HighErrorRate while DeepSeekUpstreamUnavailable is active')
    or diag $JSON->encode(DSM::Stack::api($am, '/api/v2/alerts'));
my $u = DSM::Stack::wait_for('webhook got UpstreamUnavailable', 20, sub { scalar notifications('DeepSeekUpstreamUnavailable', 'firing') });
ok($u, 'the webhook gets DeepSeekUpstreamUnavailable');
DSM::Stack::stop_pid($bg);

$prom->stop;
$am->stop;
$hook->stop;
$t->stop;
done_testing;
