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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")

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


def cpu_seconds(pid):
    """utime + stime of a process so far, in seconds (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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
