"""Shared plumbing of the bench/ scripts: building, free ports, child processes, HTTP on loopback.

Standard library only, so that every script runs from a clean checkout with python3 alone.
Every child process is started in its own process group and ended (TERM, then KILL) when the
script exits, however it exits.
"""

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where `cargo build --release` puts the binaries: CARGO_TARGET_DIR when set (cargo reads it
# relative to the directory it runs in, which is ROOT), else target/ in the checkout.
RELEASE = os.path.join(
    os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target"), "release"
)

_children = []


def log(message):
    print(message, file=sys.stderr, flush=True)


def build(packages):
    """Builds the given workspace packages in release mode (the target dir may be shared: cargo
    waits for its lock)."""
    command = ["cargo", "build", "--release", "--quiet"]
    for package in packages:
        command += ["-p", package]
    log("building: " + " ".join(command))
    subprocess.run(command, cwd=ROOT, check=True)


def binary(name):
    return os.path.join(RELEASE, name)


def workdir(prefix):
    """A temporary directory (configuration, database, logs), removed at exit unless
    WXHUB_BENCH_KEEP is set, in which case its path is printed for inspection."""
    path = tempfile.mkdtemp(prefix=prefix)
    if os.environ.get("WXHUB_BENCH_KEEP"):
        log(f"keeping {path}")
    else:
        atexit.register(shutil.rmtree, path, True)
    return path


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command, log_path, env=None, stdout=None):
    """Starts a child in its own process group, stderr (and stdout unless given) to `log_path`."""
    out = open(log_path, "ab")
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=stdout if stdout is not None else out,
        stderr=out,
        env=env,
        start_new_session=True,
    )
    _children.append(child)
    return child


def stop(child, grace=5.0):
    """Ends one child (and its process group): SIGTERM, then SIGKILL after `grace` seconds."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


def _stop_all():
    for child in reversed(_children):
        stop(child)


atexit.register(_stop_all)


def _on_signal(signum, _frame):
    # Run the atexit handlers (which stop the children) on Ctrl-C and kill too.
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def wait_port(port, child, timeout, what):
    """Waits until something accepts on 127.0.0.1:`port`; fails if `child` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{what} exited with status {child.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout}s")


def request(port, method, path, headers=None, body=None, timeout=30.0):
    """One HTTP request on loopback; returns (status, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None
        headers = dict(headers or {})
        if body is not None:
            payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
            headers.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port, child, timeout, what="wxhub"):
    """Waits for `GET /readyz` to answer 200; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{what} exited with status {child.returncode} before it was ready")
        try:
            status, _ = request(port, "GET", "/readyz", timeout=2.0)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{what} was not ready within {timeout}s")


def start_hub(config, tmp, name):
    """Starts `wxhub serve --config config`, its log in `tmp/name.log`; returns the child and
    the monotonic time it was started at."""
    started = time.monotonic()
    hub = start(
        [binary("wxhub"), "serve", "--config", config],
        os.path.join(tmp, f"{name}.log"),
        env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")),
    )
    return hub, started


def metric(port, name, labels):
    """Sum of a series of the hub's /metrics over the lines whose labels include `labels`."""
    status, body = request(port, "GET", "/metrics", timeout=30)
    if status != 200:
        return 0.0
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape_metrics(port, times=5):
    """Scrapes the hub's /metrics `times` times; returns (status, KiB, lines, median ms)."""
    scrapes = []
    for _ in range(times):
        t = time.monotonic()
        status, body = request(port, "GET", "/metrics", timeout=30)
        scrapes.append(time.monotonic() - t)
    scrapes.sort()
    return status, len(body) / 1024, body.count(b"\n"), scrapes[len(scrapes) // 2] * 1000


def mock_stats(port):
    """wechat-mock's counters (`GET /mock/stats`)."""
    status, body = request(port, "GET", "/mock/stats", timeout=120)
    if status != 200:
        raise SystemExit(f"/mock/stats answered {status}")
    return json.loads(body)


def upstream_calls(stats):
    """Every call the mock answered, by path (the hub is its only client)."""
    return {path: sum(per.values()) for path, per in stats.get("calls", {}).items()}


def calls_since(before, after):
    """The paths whose call counts moved between two `upstream_calls`, with how many calls."""
    return {p: after[p] - before.get(p, 0) for p in after if after[p] != before.get(p, 0)}


def delay_calls(mock_port, path, delay_ms):
    """Makes the mock hold every call to `path` for `delay_ms` (a delay fault), so that calls
    overlap measurably; nothing when `delay_ms` is 0."""
    if delay_ms <= 0:
        return
    fault = {"path": path, "delay_ms": delay_ms}
    status, _ = request(mock_port, "POST", "/mock/faults", body=fault)
    if status != 200:
        raise SystemExit("could not add the delay fault")


def read_status(port, key, path):
    """The HTTP status of one consumer read of `path` with `key`."""
    status, _ = request(port, "GET", path, {"Authorization": f"Bearer {key}"}, timeout=10)
    return status


def list_all(port, key, path, field, id_field, limit=500):
    """Pages through an admin listing at `path` (the page's items in `field`, each named by
    `id_field`); returns (ids, seconds per page)."""
    ids, times, cursor = [], [], None
    while True:
        query = {"limit": str(limit)}
        if cursor:
            query["cursor"] = cursor
        t = time.monotonic()
        status, body = request(
            port,
            "GET",
            path + "?" + urllib.parse.urlencode(query),
            {"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        times.append(time.monotonic() - t)
        if status != 200:
            raise SystemExit(f"listing {path} answered {status}: {body[:200]!r}")
        page = json.loads(body)
        ids += [item[id_field] for item in page[field]]
        cursor = page.get("next_cursor")
        if not cursor:
            return ids, times


def idle_cpu(pid, seconds):
    """CPU a process uses over the next `seconds`: (CPU seconds, wall seconds, % of one core)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return cpu1 - cpu0, t1 - t0, (cpu1 - cpu0) / (t1 - t0) * 100


def hash_key(key):
    """The `key_sha256` of a consumer key, as `wxhub hash-key` prints it."""
    out = subprocess.run(
        [binary("wxhub"), "hash-key", key], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def machine():
    """nproc, CPU model and memory, for the reports."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}, {memory_kib / 1024 / 1024:.1f} GiB RAM"


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def busy_cpus(seconds=1.0):
    """How many CPUs' worth of time the whole machine was busy over the next `seconds` (from
    /proc/stat): what else is running, measured now rather than averaged over the last minute."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    if total1 == total0:
        return 0.0
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid):
    """(user, system) CPU seconds of a process so far (utime and stime from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid):
    """utime + stime of a process so far, in seconds."""
    return sum(cpu_times(pid))


def rss_mib(pid):
    """Resident set size of a process, in MiB (VmRSS from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(sorted_values, p):
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]
