"""Where one gunicorn worker's time goes under load, from py-spy samples.

Two recordings of the same worker side by side: every sample (wall-clock time, idle
waits included) and only the samples holding the GIL (time the worker spends running
Python). Each stack is put in the first bucket whose frame it contains.
"""

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

BUCKETS = [
    ("PostgreSQL call: lock queue + reserve_seat() + commit", "Database.fetch_one"),
    ("gunicorn: waiting for the client to close the socket", "close_graceful"),
    ("gunicorn: sending the response", "Response.write"),
    ("gunicorn: reading and parsing the request", "Parser.__next__"),
    ("gunicorn: access log", "Logger.access"),
    ("JSON body + marshmallow validation", "load_json_body"),
    ("Flask/werkzeug: routing, request and response objects", "Flask.__call__"),
    ("gunicorn: accept loop, between connections", "SyncWorker.run_for_one"),
]


def py_spy() -> str | None:
    """py-spy from PATH, or installed next to this Python (pip install py-spy)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def start(pid: int, seconds: int, out: Path, only_gil: bool) -> subprocess.Popen:
    mode = "--gil" if only_gil else "--idle"
    return subprocess.Popen(
        [
            py_spy() or "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
        ]
        + ["--format", "raw", "--nonblocking", mode, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def buckets(raw: Path) -> Counter[str]:
    """Samples per bucket; raw is py-spy's 'stack count' lines."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        bucket = next((label for label, frame in BUCKETS if frame in stack), "other")
        samples[bucket] += int(count)
    return samples


def record(pid: int, seconds: int, workdir: Path) -> tuple[subprocess.Popen, ...]:
    return (
        start(pid, seconds, workdir / "wall.txt", only_gil=False),
        start(pid, seconds, workdir / "gil.txt", only_gil=True),
    )


def report(recorders: tuple[subprocess.Popen, ...], workdir: Path) -> list[str]:
    for recorder in recorders:
        recorder.wait(timeout=60)
    paths = [workdir / "wall.txt", workdir / "gil.txt"]
    if not all(path.exists() for path in paths):
        return ["py-spy could not attach (it needs ptrace permission)"]
    wall, gil = (buckets(path) for path in paths)
    all_samples = wall.total() or 1
    lines = ["wall clock:"]
    lines += [f"  {n / all_samples:6.1%}  {label}" for label, n in wall.most_common()]
    lines.append(f"running Python (GIL held), {gil.total() / all_samples:.0%} of the wall clock:")
    lines += [f"  {n / (gil.total() or 1):6.1%}  {label}" for label, n in gil.most_common()]
    return lines
