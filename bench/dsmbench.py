#!/usr/bin/env python3
"""
dsmbench.py - the benchmark behind bench/run.sh (see docs/performance.md).

One run, one nginx binary (Debian's /usr/sbin/nginx) with the module loaded:

  1. throughput: wrk, module on vs off through a proxied keepalive location,
     interleaved rounds (ABBA order), median of the per-round on/off ratios;
  2. callgrind instructions per request added by the module
     ((Ir after 2N requests - Ir after N requests) / N, on minus off);
  3. scrape time (curl, 20 scrapes) and instructions (callgrind) at 1,000
     and 10,000 label sets, and the lock calls a scrape makes;
  4. zone bytes per label set (from the sizes `nginx -t` asks for);
  5. parser instructions per body byte (bench/parser-bytes.sh, if present).

Topology (2 cores): the nginx under test (1 process) and wrk (1 thread) on
CPU 0, so that CPU is the bottleneck; the upstream nginx (`return 200` JSON,
static SSE file), h2load and curl on CPU 1.

Environment: NGINX, SO, ROUNDS (8), DURATION (6 s), CONNS (32), N (1000),
CPU_WRK (0: with the nginx under test),
QUICK=1 (2 rounds x 3 s), ONLY=tput,cg,scrape,zone,parser (comma list),
KEEP=1 (keep the scratch dir), RESULTS (output file), LINES=1 (keep the
.so's debug info and dump per-instruction counts, for callgrind_annotate
--auto=yes or an objdump of the kept files; gcc builds only).
"""

import datetime
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
SO = os.environ.get(
    "SO", os.path.join(ROOT,
                       "build/nginx-dev/objs/ngx_http_deepseek_metrics_module.so"))
SO_SRC = SO
QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "2" if QUICK else "8"))
DURATION = int(os.environ.get("DURATION", "3" if QUICK else "6"))
CONNS = int(os.environ.get("CONNS", "32"))
N = int(os.environ.get("N", "1000"))
ONLY = set(filter(None, os.environ.get(
    "ONLY", "tput,cg,scrape,zone,parser").split(",")))
NCPU = os.cpu_count() or 1
CPU_FRONT = "0"
CPU_AUX = "1" if NCPU > 1 else "0"
CPU_WRK = os.environ.get("CPU_WRK", CPU_FRONT)

STAMP = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
RESULTS = os.environ.get("RESULTS",
                         os.path.join(BENCH, "results-%s.txt" % STAMP))
WORK = tempfile.mkdtemp(prefix="dsm-bench.")

BUCKETS16 = ",".join(["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                      "1", "2.5", "5", "10", "30", "60", "120", "300", "600"])

procs = []
out_lines = []
summary = {}


def say(s=""):
    print(s, flush=True)
    out_lines.append(s)


def die(msg):
    say("dsmbench: " + msg)
    sys.exit(1)


# ------------------------------------------------------------ processes

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening(port):
    r = subprocess.run(["ss", "-Htln", "sport = :%d" % port],
                       capture_output=True, text=True)
    return bool(r.stdout.strip())


def start(argv, name, cpu, ports, timeout=60):
    log = open(os.path.join(WORK, name + ".out"), "w")
    p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    p.name = name
    procs.append(p)
    t0 = time.time()
    while not all(listening(x) for x in ports):
        if p.poll() is not None:
            log.close()
            die("%s exited (%s):\n%s" % (name, p.returncode,
                                         tail(os.path.join(WORK, name + ".out"))))
        if time.time() - t0 > timeout:
            die("%s did not listen on %s" % (name, ports))
        time.sleep(0.05)
    return p


def stop(p, tries=60):
    # a signal that lands just before epoll_wait is seen only at the next
    # timer (upstream keepalive: 60 s): repeat it until the process exits
    for _ in range(tries):
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGQUIT)
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        p.kill()
        p.wait()
    if p in procs:
        procs.remove(p)


def cleanup():
    for p in list(procs):
        if p.poll() is None:
            p.kill()
            p.wait()
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print("scratch dir kept: " + WORK)


def tail(path, n=20):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def run(argv, cpu=None, timeout=600, check=True):
    if cpu is not None:
        argv = ["taskset", "-c", cpu] + argv
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        die("%s failed (%d):\n%s%s" % (" ".join(argv), r.returncode,
                                       r.stdout[-2000:], r.stderr[-2000:]))
    return r


# ------------------------------------------------------------ configs

COMMON = """
master_process off;
daemon off;
worker_processes 1;
error_log @DIR@/error.log warn;
pid @DIR@/nginx.pid;
events { worker_connections 4096; }
"""

HTTP_COMMON = """
    access_log off;
    client_body_temp_path @DIR@/body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
"""


def write_conf(name, text, subst):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    subst = dict(subst, DIR=d)
    for k, v in subst.items():
        text = text.replace("@%s@" % k, str(v))
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(text)
    return d


def upstream_conf(port):
    with open(os.path.join(BENCH, "fixtures/chat.json")) as f:
        body = f.read().strip()
    if "'" in body or "$" in body or "\\" in body:
        die("fixtures/chat.json must not contain ' $ or \\")
    d = write_conf("up", COMMON + """
http {
""" + HTTP_COMMON + """
    server {
        listen 127.0.0.1:@PORT@ backlog=4096;
        root @DIR@/html;
        location /stream/ {
            types { text/event-stream sse; }
            try_files /chat-stream.sse =404;
        }
        location / {
            default_type application/json;
            return 200 '@BODY@';
        }
    }
}
""", {"PORT": port, "BODY": body})
    os.makedirs(os.path.join(d, "html"), exist_ok=True)
    shutil.copy(os.path.join(BENCH, "fixtures/chat-stream.sse"),
                os.path.join(d, "html/chat-stream.sse"))
    return d


def front_conf(name, ports, up, module=True, lab_series=12000):
    """ports: dict on, lab, off.  module=False: no load_module at all."""
    with open(os.path.join(BENCH, "fixtures/chat.json")) as f:
        body = f.read().strip()
    dsm_http = ""
    on_server = lab_server = ""
    if module:
        dsm_http = """
    deepseek_metrics_zone bench:8m;
    deepseek_metrics_zone lab:@LABSIZE@ max_series=@LABSERIES@;
"""
        on_server = """
    server {
        listen 127.0.0.1:@ON@ backlog=4096;
        deepseek_metrics bench;
        location / { proxy_pass http://up; }
        location /buffered/ {
            deepseek_metrics_stream_unbuffered off;
            proxy_pass http://up/;
        }
        location = /metrics { deepseek_metrics_export bench; }
    }
"""
        lab_server = """
    server {
        listen 127.0.0.1:@LAB@ backlog=4096;
        deepseek_metrics lab;
        deepseek_metrics_label k $arg_k;
        location / { proxy_pass http://up; }
        location /fill/ {
            default_type application/json;
            return 200 '@BODY@';
        }
        location = /metrics { deepseek_metrics_export lab; }
    }
"""
    text = ("load_module @SO@;\n" if module else "") + COMMON + """
http {
""" + HTTP_COMMON + """
    upstream up {
        server 127.0.0.1:@UP@;
        keepalive 64;
        keepalive_requests 100000000;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
""" + dsm_http + on_server + lab_server + """
    server {
        listen 127.0.0.1:@OFF@ backlog=4096;
        location / { proxy_pass http://up; }
        location /buffered/ { proxy_pass http://up/; }
    }
}
"""
    # the lab zone: size it for lab_series series (1.2 KB a series is ample)
    labsize = "%dm" % max(8, (lab_series * 1200) // (1024 * 1024) + 4)
    return write_conf(name, text, {
        "SO": SO, "UP": up, "ON": ports["on"], "LAB": ports["lab"],
        "OFF": ports["off"], "BODY": body, "LABSIZE": labsize,
        "LABSERIES": lab_series})


def nginx_argv(d):
    return [NGINX, "-p", d + "/", "-c", d + "/nginx.conf"]


# ------------------------------------------------------------ clients

def h2load(uris, n, cpu=CPU_AUX, timeout=900):
    """n requests on one keepalive connection, URIs in order, round robin."""
    f = os.path.join(WORK, "uris.txt")
    with open(f, "w") as fh:
        fh.write("\n".join(uris) + "\n")
    r = run(["h2load", "--h1", "-n", str(n), "-c", "1", "-m", "1", "-i", f],
            cpu=cpu, timeout=timeout)
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, "
                  r"(\d+) succeeded", r.stdout)
    st = re.search(r"status codes: (\d+) 2xx", r.stdout)
    if not m or int(m.group(3)) != n or not st or int(st.group(1)) != n:
        die("h2load: not all %d requests succeeded:\n%s" % (n, r.stdout))


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])        # utime + stime


def wrk(url, duration, pid=None):
    """(requests/s, CPU microseconds of process pid per request)"""
    c0 = cpu_ticks(pid) if pid else 0
    r = run(["wrk", "-t1", "-c%d" % CONNS, "-d%ds" % duration, url],
            cpu=CPU_WRK, timeout=duration + 60)
    c1 = cpu_ticks(pid) if pid else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    n = re.search(r"(\d+) requests in", r.stdout)
    if not m or not n:
        die("wrk output:\n" + r.stdout)
    if "Non-2xx" in r.stdout or "Socket errors" in r.stdout:
        die("wrk saw errors:\n" + r.stdout)
    hz = os.sysconf("SC_CLK_TCK")
    return float(m.group(1)), (c1 - c0) * 1e6 / hz / int(n.group(1))


# ------------------------------------------------------------ callgrind

def cg_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    die("no totals in " + path)


def cg_funcs(path):
    """self Ir per function (callgrind_annotate --inclusive=no)."""
    r = run(["callgrind_annotate", "--inclusive=no", "--threshold=100",
             path])
    funcs = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S+?):(\S+)"
                     r"(?:\s+\[(.*)\])?\s*$", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(3)
        obj = os.path.basename(m.group(4) or m.group(2))
        key = "%s [%s]" % (fn, obj)
        funcs[key] = funcs.get(key, 0) + ir
    return funcs


def is_module_fn(key):
    return key.startswith("ngx_http_dsm_") or \
        key.startswith("ngx_http_deepseek_metrics_")


def cg_run(name, conf_dir, ports, steps):
    """nginx under callgrind; steps: list of (uris, n) sent in order."""
    out = os.path.join(WORK, "cg.%s.out" % name)
    p = start(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
               "--dump-instr=" + ("yes" if os.environ.get("LINES") == "1"
                                  else "no"),
               "--compress-strings=no"]
              + nginx_argv(conf_dir), "cg-" + name, CPU_FRONT, ports,
              timeout=120)
    t = [time.time()]
    for uris, n in steps:
        h2load(uris, n)
        t.append(time.time())
    stop(p)
    t.append(time.time())
    if os.environ.get("DEBUG"):
        print("    %s: %s" % (name, " ".join("%.1f" % (b - a) for a, b in
                                            zip(t, t[1:]))), flush=True)
    if "exited on signal" in tail(os.path.join(conf_dir, "error.log"), 100):
        die("nginx crashed under callgrind (%s)" % name)
    return out


def per_request(name, conf_dir, ports, uris, n=N, warm=None):
    """(Ir(2n) - Ir(n)) / n and per-function self Ir per request."""
    pre = [(warm, len(warm))] if warm else []
    a = cg_run(name + ".n", conf_dir, ports, pre + [(uris, n)])
    b = cg_run(name + ".2n", conf_dir, ports, pre + [(uris, 2 * n)])
    fa, fb = cg_funcs(a), cg_funcs(b)
    funcs = {k: (fb.get(k, 0) - fa.get(k, 0)) / n
             for k in set(fa) | set(fb)}
    return (cg_total(b) - cg_total(a)) / n, funcs


# ------------------------------------------------------------ sections

def fmt(x, d=0):
    return "{:,.{}f}".format(x, d)


def section(title):
    say("")
    say("=" * 78)
    say(title)
    say("=" * 78)


def sec_throughput(up_port):
    section("1. Throughput: module on vs off, proxied keepalive location "
            "(wrk -t1 -c%d, %d x %d s, ABBA)" % (CONNS, ROUNDS, DURATION))
    ports = {"on": free_port(), "lab": free_port(), "off": free_port()}
    d = front_conf("front-tput", ports, up_port)
    front = start(nginx_argv(d), "front-tput", CPU_FRONT,
                  list(ports.values()))
    say("nginx under test: 1 process (master_process off) on CPU %s, "
        "wrk (1 thread) on CPU %s, upstream nginx on CPU %s"
        % (CPU_FRONT, CPU_WRK, CPU_AUX))
    scen = [("count (GET /v1/models, counted, not parsed)", "/v1/models"),
            ("chat (GET /v1/chat/completions, 937 B JSON parsed)",
             "/v1/chat/completions")]
    say("ratio = on/off requests/s per round (median over rounds); cpu = "
        "microseconds of")
    say("CPU (user+sys) of the nginx under test per request, on/off cpu "
        "ratio = off/on")
    say("(less sensitive to other load on the machine)")
    res, cres = {}, {}
    for label, path in scen:
        on_url = "http://127.0.0.1:%d%s" % (ports["on"], path)
        off_url = "http://127.0.0.1:%d%s" % (ports["off"], path)
        wrk(on_url, 2)       # warm-up: upstream keepalive, caches
        wrk(off_url, 2)
        ons, offs, ratios, con, coff = [], [], [], [], []
        for i in range(ROUNDS):
            if i % 2 == 0:
                on, c1 = wrk(on_url, DURATION, front.pid)
                off, c2 = wrk(off_url, DURATION, front.pid)
            else:
                off, c2 = wrk(off_url, DURATION, front.pid)
                on, c1 = wrk(on_url, DURATION, front.pid)
            ons.append(on)
            offs.append(off)
            ratios.append(on / off)
            con.append(c1)
            coff.append(c2)
        res[path] = statistics.median(ratios)
        cres[path] = statistics.median(coff) / statistics.median(con)
        say("")
        say(label)
        say("  %-6s %10s %10s %8s %10s %10s" % (
            "round", "on req/s", "off req/s", "ratio", "on cpu", "off cpu"))
        for i in range(ROUNDS):
            say("  %-6d %10s %10s %8.3f %8.1fus %8.1fus" % (
                i + 1, fmt(ons[i]), fmt(offs[i]), ratios[i], con[i],
                coff[i]))
        say("  %-6s %10s %10s %8.3f %8.1fus %8.1fus  cpu ratio %.3f" % (
            "median", fmt(statistics.median(ons)),
            fmt(statistics.median(offs)), res[path],
            statistics.median(con), statistics.median(coff), cres[path]))
        say("  spread of the round ratios: %.3f .. %.3f" % (min(ratios),
                                                          max(ratios)))
    stop(front)
    summary["ratio_count"] = res["/v1/models"]
    summary["ratio_chat"] = res["/v1/chat/completions"]
    summary["cpu_count"] = cres["/v1/models"]
    summary["cpu_chat"] = cres["/v1/chat/completions"]


def show_funcs(funcs, total, top=12):
    mod = sorted(((v, k) for k, v in funcs.items() if is_module_fn(k)),
                 reverse=True)
    modsum = sum(v for v, _ in mod)
    say("    module functions (self Ir per request):")
    for v, k in mod[:top]:
        if abs(v) >= 0.5:
            say("      %10s  %s" % (fmt(v, 1), k.split(" [")[0]))
    say("      %10s  = sum of module functions' own instructions" %
        fmt(modsum, 1))
    say("      %10s  = the rest (nginx/libc code the module calls or "
        "changes)" % fmt(total - modsum, 1))


def sec_callgrind(up_port):
    section("2. Instructions per request added by the module (callgrind, "
            "(Ir[2N] - Ir[N]) / N, N=%d)" % N)
    ports = {"on": free_port(), "lab": free_port(), "off": free_port()}
    d = front_conf("front-cg", ports, up_port)
    dn = front_conf("front-cg-none", ports, up_port, module=False)
    pl = list(ports.values())

    def u(port, path):
        return "http://127.0.0.1:%d%s" % (ports[port], path)

    keys1000 = ["/v1/models?k=%d" % i for i in range(1, 1001)]
    runs = [
        ("a.off", d, [u("off", "/v1/models")]),
        ("a.none", dn, [u("off", "/v1/models")]),
        ("a.on", d, [u("on", "/v1/models")]),
        ("b.off", d, [u("off", p) for p in keys1000]),
        ("b1.on", d, [u("lab", "/v1/models?k=1")]),
        ("b1000.on", d, [u("lab", p) for p in keys1000]),
        ("c.off", d, [u("off", "/v1/chat/completions")]),
        ("c.on", d, [u("on", "/v1/chat/completions")]),
        ("d.off", d, [u("off", "/stream/v1/chat/completions")]),
        ("d.on", d, [u("on", "/stream/v1/chat/completions")]),
        ("dbuf.off", d, [u("off", "/buffered/stream/v1/chat/completions")]),
        ("dbuf.on", d, [u("on", "/buffered/stream/v1/chat/completions")]),
    ]
    ir, fn = {}, {}
    for name, conf, uris in runs:
        t0 = time.time()
        plist = pl if conf == d else [ports["off"]]
        ir[name], fn[name] = per_request(name, conf, plist, uris)
        print("  [%s: %s Ir/request, %.0f s]" % (name, fmt(ir[name]),
                                                time.time() - t0), flush=True)

    base_a = ir["a.off"]
    rows = [
        ("plain proxied request, module not loaded", ir["a.none"], None),
        ("plain proxied request, module loaded, off", base_a,
         base_a - ir["a.none"]),
        ("(a) counting, 1 label set (/v1/models)", ir["a.on"],
         ir["a.on"] - base_a),
        ("(b) user label k, 1 distinct value", ir["b1.on"],
         ir["b1.on"] - ir["b.off"]),
        ("(b) user label k, 1,000 distinct values", ir["b1000.on"],
         ir["b1000.on"] - ir["b.off"]),
        ("(c) 937 B JSON chat response, parsed", ir["c.on"],
         ir["c.on"] - ir["c.off"]),
        ("(d) SSE stream, 30 events + [DONE], 8.7 KB", ir["d.on"],
         ir["d.on"] - ir["d.off"]),
        ("(d') same, deepseek_metrics_stream_unbuffered off", ir["dbuf.on"],
         ir["dbuf.on"] - ir["dbuf.off"]),
    ]
    say("")
    say("  %-52s %10s %10s" % ("scenario", "Ir/req", "added"))
    for label, v, add in rows:
        say("  %-52s %10s %10s" % (label, fmt(v),
                                   "-" if add is None else "%+d" % round(add)))
    summary["plain"] = base_a
    summary["add_a"] = ir["a.on"] - base_a
    summary["add_b1"] = ir["b1.on"] - ir["b.off"]
    summary["add_b1000"] = ir["b1000.on"] - ir["b.off"]
    summary["add_c"] = ir["c.on"] - ir["c.off"]
    summary["add_d"] = ir["d.on"] - ir["d.off"]
    summary["add_dbuf"] = ir["dbuf.on"] - ir["dbuf.off"]
    summary["loaded_off"] = base_a - ir["a.none"]

    for name, title, total in [
            ("a.on", "(a) counting, 1 label set", summary["add_a"]),
            ("b1000.on", "(b) 1,000 label sets", summary["add_b1000"]),
            ("c.on", "(c) 937 B JSON, parsed", summary["add_c"]),
            ("d.on", "(d) SSE, 30 events", summary["add_d"])]:
        say("")
        say("  %s: %s added Ir/request" % (title, fmt(total)))
        show_funcs(fn[name], total)
    # what differs most between on and off outside the module (c and d)
    for on, off, title in [("c.on", "c.off", "(c)"), ("d.on", "d.off", "(d)"),
                           ("a.on", "a.off", "(a)")]:
        diff = {k: fn[on].get(k, 0) - fn[off].get(k, 0)
                for k in set(fn[on]) | set(fn[off])}
        top = sorted(((v, k) for k, v in diff.items()
                      if not is_module_fn(k) and abs(v) >= 5),
                     key=lambda x: -abs(x[0]))[:8]
        if top:
            say("")
            say("  %s non-module functions whose Ir/request changes most "
                "(on - off):" % title)
            for v, k in top:
                say("      %+10s  %s" % (fmt(v, 1), k))


def scrape_urls(port, n):
    return ["http://127.0.0.1:%d/fill/v1/chat/completions?k=%d" % (port, i)
            for i in range(1, n + 1)]


def sec_scrape(up_port):
    section("3. Scrape time and instructions at 1,000 and 10,000 label sets")
    say("label sets = deepseek_metrics_label k $arg_k, filled with 200 "
        "chat_completions responses")
    say("(937 B JSON with usage, so each series has requests_total, the "
        "latency histogram,")
    say("3 token series and reasoning tokens); text format 0.0.4; curl "
        "--compressed not used.")
    ports = {"on": free_port(), "lab": free_port(), "off": free_port()}
    d = front_conf("front-scrape", ports, up_port)
    pl = list(ports.values())
    murl = "http://127.0.0.1:%d/metrics" % ports["lab"]
    res = {}

    # wall time, native
    front = start(nginx_argv(d), "front-scrape", CPU_FRONT, pl)
    filled = 0
    for n in (1000, 10000):
        h2load(scrape_urls(ports["lab"], n)[filled:], n - filled)
        filled = n
        run(["curl", "-s", "-o", os.path.join(WORK, "scrape.txt"), murl],
            cpu=CPU_AUX)
        times, ttfb, size = [], [], 0
        for _ in range(20):
            r = run(["curl", "-s", "-o", "/dev/null", "-w",
                     "%{time_total} %{time_starttransfer} %{size_download}",
                     murl], cpu=CPU_AUX)
            t, t1, sz = r.stdout.split()
            times.append(float(t) * 1000)
            ttfb.append(float(t1) * 1000)
            size = int(sz)
        with open(os.path.join(WORK, "scrape.txt")) as f:
            text = f.read()
        used = re.search(r'deepseek_metrics_series\{zone="lab",state="used"\}'
                         r' (\d+)', text)
        dropped = re.search(r'deepseek_metrics_dropped_total\{zone="lab"\}'
                            r' (\d+)', text)
        res[n] = {"times": sorted(times), "ttfb": sorted(ttfb), "size": size,
                  "lines": text.count("\n"),
                  "used": int(used.group(1)) if used else -1,
                  "dropped": int(dropped.group(1)) if dropped else -1}
    stop(front)

    # instructions: fill + 3 scrapes minus fill + 1 scrape, over 2
    for n in (1000, 10000):
        fill = scrape_urls(ports["lab"], n)
        t0 = time.time()
        a = cg_run("scrape%d.1" % n, d, pl, [(fill, n), ([murl], 1)])
        b = cg_run("scrape%d.3" % n, d, pl, [(fill, n), ([murl], 3)])
        fa, fb = cg_funcs(a), cg_funcs(b)
        res[n]["ir"] = (cg_total(b) - cg_total(a)) / 2
        res[n]["funcs"] = {k: (fb.get(k, 0) - fa.get(k, 0)) / 2
                           for k in set(fa) | set(fb)}
        res[n]["lock"] = sum(v for k, v in res[n]["funcs"].items()
                             if k.startswith("ngx_shmtx_lock")
                             or k.startswith("ngx_shmtx_trylock"))
        print("  [scrape %d: %.0f s]" % (n, time.time() - t0), flush=True)

    say("")
    say("  curl -o /dev/null, 20 scrapes each: total time (median, p90, min)"
        " and time to first byte")
    say("  %-10s %6s %7s %9s %9s %9s %9s %11s %11s %7s" % (
        "label sets", "used", "dropped", "median", "p90", "min", "ttfb",
        "bytes", "Ir/scrape", "lock Ir"))
    for n in (1000, 10000):
        r = res[n]
        t = r["times"]
        say("  %-10s %6d %7d %7.2fms %7.2fms %7.2fms %7.2fms %11s %11s %7s" % (
            fmt(n), r["used"], r["dropped"], statistics.median(t),
            t[int(len(t) * 0.9) - 1], t[0], statistics.median(r["ttfb"]),
            fmt(r["size"]), fmt(r["ir"]), fmt(r["lock"])))
        say("  %-10s %s bytes and %s lines per label set" % (
            "", fmt(r["size"] / n), fmt(r["lines"] / n, 1)))
    for n in (1000, 10000):
        say("")
        say("  scrape of %s label sets: %s Ir, top functions (self):" % (
            fmt(n), fmt(res[n]["ir"])))
        top = sorted(((v, k) for k, v in res[n]["funcs"].items()),
                     reverse=True)[:10]
        for v, k in top:
            say("      %14s  %s" % (fmt(v), k))
    say("")
    say("  lock: ngx_shmtx_lock/trylock instructions during the scrapes "
        "(3-scrape run minus 1-scrape run): %s" % fmt(res[10000]["lock"]))
    summary["scrape"] = res


def nginx_t_need(zone_args):
    d = write_conf("zone-t", "load_module @SO@;\n" + COMMON + """
http {
""" + HTTP_COMMON + """
    deepseek_metrics_zone z:@ARGS@;
}
""", {"SO": SO, "ARGS": zone_args})
    r = run(nginx_argv(d) + ["-t"], check=False)
    m = re.search(r"\((\d+) bytes a series\): set its size to at least "
                  r"(\d+)k", r.stderr)
    if not m:
        die("nginx -t did not report a size for %s:\n%s" % (zone_args,
                                                              r.stderr))
    return int(m.group(1)), int(m.group(2)) * 1024


def sec_zone():
    section("4. Zone bytes per label set (16 buckets)")
    say("From the size `nginx -t` asks for: (size(max_series=20000) - "
        "size(max_series=10000)) / 10000;")
    say("that covers the series record, the 128 B slab estimate for its key "
        "and label text, the")
    say("hash slot and the slab page descriptors.  A label set = one series "
        "record (endpoint, model,")
    say("status, user labels); every status of a label set is its own record.")
    say("")
    variants = [
        ("default histograms (latency,ttft,answer,queue,tpot)", ""),
        ("histograms=latency,ttft", " histograms=latency,ttft"),
        ("histograms=latency", " histograms=latency"),
    ]
    say("  %-54s %12s %12s" % ("histograms (buckets=16 values)",
                               "series rec", "zone B/set"))
    res = {}
    for label, extra in variants:
        rec1, s1 = nginx_t_need("64k max_series=10000 buckets=%s%s"
                                % (BUCKETS16, extra))
        _, s2 = nginx_t_need("64k max_series=20000 buckets=%s%s"
                             % (BUCKETS16, extra))
        per = (s2 - s1) / 10000
        res[extra.strip() or "default"] = per
        say("  %-54s %10d B %10.0f B" % (label, rec1 - 128, per))
    summary["zone"] = res


def sec_parser():
    section("5. Parser instructions per body byte (bench/parser-bytes.sh)")
    script = os.path.join(BENCH, "parser-bytes.sh")
    if not os.path.exists(script):
        say("  bench/parser-bytes.sh not present: skipped")
        return
    r = subprocess.run(["sh", script], capture_output=True, text=True,
                       timeout=900, cwd=ROOT)
    for line in r.stdout.splitlines():
        say("  " + line)
    if r.returncode != 0:
        say("  parser-bytes.sh failed (%d): %s" % (r.returncode,
                                                   r.stderr[-1000:]))
        return
    ipb = {}
    for m in re.finditer(r"^(\w+): \d+ instructions / \d+ bytes = "
                         r"([\d.]+) instructions/byte", r.stdout, re.M):
        ipb[m.group(1)] = float(m.group(2))
    summary["parser"] = ipb


def sec_summary():
    section("Summary vs targets (issues 2 and 3) and anchors")
    s = summary
    rows = []

    def row(what, value, target, ok, anchor=""):
        rows.append((what, value, target,
                     "-" if ok is None else ("ok" if ok else "MISSED"),
                     anchor))

    if "ratio_count" in s:
        row("req/s ratio on/off, counting", "%.3f" % s["ratio_count"],
            ">= 0.98", s["ratio_count"] >= 0.98,
            "vts 0.94, lua 0.80")
        row("req/s ratio on/off, 1 KB chat parsed", "%.3f" % s["ratio_chat"],
            ">= 0.98", s["ratio_chat"] >= 0.98)
        row("CPU/request ratio off/on, counting", "%.3f" % s["cpu_count"],
            ">= 0.98", s["cpu_count"] >= 0.98)
        row("CPU/request ratio off/on, 1 KB chat parsed",
            "%.3f" % s["cpu_chat"], ">= 0.98", s["cpu_chat"] >= 0.98)
    if "add_a" in s:
        row("plain proxied request (module off)", fmt(s["plain"]) + " Ir",
            "", None, "~20,000")
        row("added Ir/request, counting (1 set)", "%+d" % round(s["add_a"]),
            "<= 300", s["add_a"] <= 300, "vts +6,379, lua +30,452")
        row("added Ir/request, user label: 1 set", "%+d" % round(s["add_b1"]),
            "<= 300", s["add_b1"] <= 300)
        row("added Ir/request, user label: 1,000 sets",
            "%+d" % round(s["add_b1000"]), "flat (<= +5%)",
            s["add_b1000"] - s["add_b1"] <= 0.05 * abs(s["add_b1"]))
        row("added Ir/request, module loaded but off",
            "%+d" % round(s["loaded_off"]), "", None)
        row("added Ir, 1 KB JSON incl. parse", "%+d" % round(s["add_c"]),
            "<= 1,500", s["add_c"] <= 1500)
        row("added Ir, SSE 30 events (unbuffered)", "%+d" % round(s["add_d"]),
            "", None)
        row("added Ir, SSE 30 events (buffered)",
            "%+d" % round(s["add_dbuf"]), "", None)
    if "scrape" in s:
        r = s["scrape"][10000]
        med = statistics.median(r["times"])
        row("scrape 10,000 sets, time", "%.2f ms" % med, "< 10 ms",
            med < 10, "vts 51.6 ms")
        row("scrape 10,000 sets, instructions", "%.1f M" % (r["ir"] / 1e6),
            "< 40 M", r["ir"] < 40e6, "vts 444 M")
        row("scrape holds a lock", "no" if r["lock"] == 0 else "YES",
            "no", r["lock"] == 0, "vts: zone lock")
        r1 = s["scrape"][1000]
        row("scrape 1,000 sets", "%.2f ms / %.1f M" % (
            statistics.median(r1["times"]), r1["ir"] / 1e6), "", None)
    if "zone" in s:
        for k, v in s["zone"].items():
            row("zone B/label set, 16 buckets, %s" % k, "%.0f B" % v,
                "<= 512", v <= 512, "vts 4,096 B" if k == "default" else "")
    if "parser" in s:
        for k, v in s["parser"].items():
            row("parser Ir/body byte, %s" % k, "%.2f" % v, "<= 4", v <= 4)
    say("")
    say("  %-50s %14s %14s %7s  %s" % ("measure", "value", "target", "",
                                       "anchor"))
    for r in rows:
        say("  %-50s %14s %14s %7s  %s" % r)


def main():
    global SO
    if not os.path.exists(SO):
        die("module not built: %s" % SO)
    # a private copy: build/ is shared, and valgrind 3.19 cannot read every
    # DWARF 5 form (clang's); the symbol table is enough for callgrind
    SO = os.path.join(WORK, "ngx_http_deepseek_metrics_module.so")
    shutil.copy(SO_SRC, SO)
    if os.environ.get("LINES") != "1":
        run(["objcopy", "--strip-debug", SO])
    for tool in ("wrk", "h2load", "valgrind", "callgrind_annotate",
                 "taskset", "curl", "ss"):
        if not shutil.which(tool):
            die("%s is required (apt-get install wrk nghttp2-client "
                "valgrind util-linux curl iproute2)" % tool)
    t0 = time.time()
    say("deepseek_metrics benchmark, %s" % datetime.datetime.now()
        .strftime("%Y-%m-%d %H:%M:%S"))
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always",
                          "--dirty"], capture_output=True, text=True)
    say("nginx: %s (%s)   module: %s   git: %s" % (
        NGINX, run([NGINX, "-v"]).stderr.strip(), SO_SRC, git.stdout.strip()))
    say("cpus: %d; %s" % (NCPU, open("/proc/cpuinfo").read().split(
        "model name")[1].split("\n")[0].strip(" :\t")
        if "model name" in open("/proc/cpuinfo").read() else ""))
    say("load average at start: %s" % open("/proc/loadavg").read().strip())
    up_port = free_port()
    up = None
    if ONLY & {"tput", "cg", "scrape"}:
        ud = upstream_conf(up_port)
        up = start(nginx_argv(ud), "upstream", CPU_AUX, [up_port])
    if "tput" in ONLY:
        sec_throughput(up_port)
    if "cg" in ONLY:
        sec_callgrind(up_port)
    if "scrape" in ONLY:
        sec_scrape(up_port)
    if up:
        stop(up)
    if "zone" in ONLY:
        sec_zone()
    if "parser" in ONLY:
        sec_parser()
    sec_summary()
    say("")
    say("load average at end: %s (other work on the machine makes the "
        "wrk figures noisy;" % open("/proc/loadavg").read().strip())
    say("the callgrind figures are deterministic)")
    say("total time: %.0f s" % (time.time() - t0))
    with open(RESULTS, "w") as f:
        f.write("\n".join(out_lines) + "\n")
    print("results written to " + RESULTS)


def on_signal(signum, frame):
    raise SystemExit("dsmbench: signal %d" % signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        main()
    finally:
        cleanup()
