"""Private instances of the programs the service is deployed with: nginx, PgBouncer, Redis.

Each runs from a temporary directory on a free port of 127.0.0.1, started from the
configuration files shipped in deploy/ with only ports and paths changed, and is stopped
by the test that started it. The machine's own services are never touched.
"""

import configparser
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from conftest import ROOT, free_port, skip_or_fail
from requests.adapters import HTTPAdapter

DEPLOY = ROOT / "deploy"
# nginx and PgBouncer drop root privileges: as root, their files must be readable by this.
UNPRIVILEGED_USER = "nobody"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll a condition until it holds, or fail after the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def log_entries(path: Path) -> list[dict]:
    """The JSON lines of a log written so far (a line still being written is left out)."""
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.startswith("{")]


def wait_for_entries(path: Path, predicate: Callable[[dict], bool], count: int = 1) -> list[dict]:
    """gunicorn writes the access line after the response: wait for it to appear."""
    found: list[dict] = []

    def enough() -> bool:
        found[:] = [entry for entry in log_entries(path) if predicate(entry)]
        return len(found) >= count

    wait_for(enough, f"{count} log entries in {path}", timeout=10)
    return found


def require_program(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        skip_or_fail(f"{name} is not installed (apt-get install {name})")
    return path


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"not listening on {port}:\n{log.read_text()}")


class PrivateDir:
    """A temporary directory the unprivileged user can use (/tmp itself is world-writable)."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"booking-{prefix}-"))
        self.path.chmod(0o755)

    def hand_over(self) -> None:
        """Give every file in it to the unprivileged user when we run as root."""
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        for path in [self.path, *self.path.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Process:
    """A started program: stop() ends it and waits, then removes its directory."""

    def __init__(self, args: list[str], workdir: PrivateDir, port: int, log: Path) -> None:
        self.workdir = workdir
        self.port = port
        self.log_path = log
        with open(log, "a") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, self.proc, log)
        except RuntimeError:
            self.stop()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.workdir.remove()


def render_nginx_site(upstream_port: int, listen_port: int, log_dir: Path) -> str:
    """deploy/nginx.conf with the test's ports and log directory, nothing else changed."""
    site = (DEPLOY / "nginx.conf").read_text()
    site, listens = re.subn(
        r"(?m)^(\s*)listen\s+[^;]+;", rf"\1listen 127.0.0.1:{listen_port};", site
    )
    site, upstreams = re.subn(
        r"server 127\.0\.0\.1:3000;", f"server 127.0.0.1:{upstream_port};", site
    )
    assert (listens, upstreams) == (1, 1), "deploy/nginx.conf no longer has the lines we patch"
    return site.replace("/var/log/nginx/", f"{log_dir}/")


def start_nginx(upstream_port: int) -> Process:
    """A private nginx serving the shipped site file in front of 127.0.0.1:upstream_port."""
    nginx = require_program("nginx")
    workdir = PrivateDir("nginx")
    port = free_port()
    d = workdir.path
    (d / "booking.conf").write_text(render_nginx_site(upstream_port, port, d))
    temp_paths = "\n".join(
        f"    {kind}_temp_path {d}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # The `user` directive only counts when the master runs as root.
    user = ""
    if os.geteuid() == 0:
        group = grp.getgrgid(pwd.getpwnam(UNPRIVILEGED_USER).pw_gid).gr_name
        user = f"user {UNPRIVILEGED_USER} {group};"
    (d / "nginx.conf").write_text(
        f"""{user}
worker_processes 2;
error_log {d}/error.log warn;
events {{ worker_connections 2048; }}
http {{
{temp_paths}
    include {d}/booking.conf;
}}
"""
    )
    workdir.hand_over()
    args = [nginx, "-p", str(d), "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"]
    args += ["-g", f"daemon off; pid {d}/nginx.pid;"]
    process = Process(args, workdir, port, d / "stdout.log")
    process.url = f"http://127.0.0.1:{port}"
    return process


def start_pgbouncer(database_url: str) -> Process:
    """A private PgBouncer from deploy/pgbouncer.ini, transaction pooling, trust auth."""
    pgbouncer = require_program("pgbouncer")
    from psycopg2.extensions import parse_dsn

    dsn = parse_dsn(database_url)
    workdir = PrivateDir("pgbouncer")
    d = workdir.path
    port = free_port()
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(DEPLOY / "pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    backend = f"host={dsn.get('host', '127.0.0.1')} port={dsn.get('port', 5432)}"
    ini["databases"] = {dsn["dbname"]: f"{backend} dbname={dsn['dbname']}"}
    user = dsn.get("user", "postgres")
    ini["pgbouncer"].update(
        {
            "listen_port": str(port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": f"{d}/userlist.txt",
            "logfile": f"{d}/pgbouncer.log",
            "pidfile": f"{d}/pgbouncer.pid",
            "admin_users": user,
            "stats_users": user,
        }
    )
    (d / "userlist.txt").write_text(f'"{user}" ""\n')
    with open(d / "pgbouncer.ini", "w") as out:
        ini.write(out)
    workdir.hand_over()
    args = [pgbouncer]
    if os.geteuid() == 0:
        args += ["-u", UNPRIVILEGED_USER]  # PgBouncer refuses to run as root
    process = Process([*args, f"{d}/pgbouncer.ini"], workdir, port, d / "stdout.log")
    process.url = f"postgresql://{user}@127.0.0.1:{port}/{dsn['dbname']}"
    return process


def start_redis() -> Process:
    """A private, throw-away redis-server (no persistence) for outage tests."""
    redis_server = require_program("redis-server")
    workdir = PrivateDir("redis")
    port = free_port()
    args = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(workdir.path)]
    process = Process(args, workdir, port, workdir.path / "redis.log")
    process.url = f"redis://127.0.0.1:{port}/0"
    return process


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen loopback address (all of 127/8 is this machine)."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(source))
    return session
