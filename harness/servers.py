"""Real programs, started the way they are deployed: gunicorn the way `make run` starts it
(the benchmark's floor app too), and private instances of nginx, PgBouncer and Redis, each
on a free port of 127.0.0.1 from a temporary directory, from the files shipped in deploy/
with only ports and paths changed. The machine's own services are never touched.
"""

import configparser
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import requests

from harness import DEPLOY, ROOT, free_port, skip_or_fail, wait_for

# The machine's Redis, shared by the tests that need one budget across workers; each uses a
# key prefix of its own (the shared_redis fixture).
SHARED_REDIS = "redis://127.0.0.1:6379/0"

# nginx and PgBouncer drop root privileges: as root, their files must be readable by this.
UNPRIVILEGED_USER = "nobody"


class Gunicorn:
    """A real gunicorn serving the app, started the way `make run` starts it.

    workers=None keeps gunicorn.conf.py's own count (WEB_CONCURRENCY or 2 x cores + 1);
    bench/run.py starts its floor app with another `app` and `config`.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        workers: int | None = 4,
        app: str = "wsgi:app",
        config: str = "gunicorn.conf.py",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1"}
        if workers is not None:
            full_env["WEB_CONCURRENCY"] = str(workers)
        full_env.update(env)
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", config, app],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_until_serving()
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def wait_until_serving(self, timeout: float = 30) -> None:
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text()}")
            try:
                return requests.get(f"{self.url}/health", timeout=1).status_code == 200
            except requests.RequestException:  # not listening yet, or slow on a busy machine
                return False

        try:
            wait_for(serving, "gunicorn to serve /health", timeout)
        except AssertionError:
            raise RuntimeError(f"gunicorn did not start:\n{self.log_path.read_text()}") from None

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()


class Worker:
    """The worker process (`flask --app wsgi worker`), started the way `make run` starts it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
            cwd=ROOT,
            env={**os.environ, "FLASK_SKIP_DOTENV": "1", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: "worker started" in log_path.read_text(), "the worker to start")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as the kernel's OOM killer would."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.log.close()


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
    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, f"port {port}", timeout)
    except AssertionError:
        raise RuntimeError(f"not listening on {port}:\n{log.read_text()}") from None


def hand_over(directory: Path) -> None:
    """Give the directory and every file in it to the unprivileged user when we run as root."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)


class PrivateDir:
    """A temporary directory the unprivileged user can use (/tmp itself is world-writable)."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"booking-{prefix}-"))
        self.path.chmod(0o755)

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


# The directories of this machine the shipped nginx site writes to: its logs, and its cache
# with nginx's own temporary files (deploy/nginx.conf). A private nginx gets its own in their
# place (with_private_dirs), so it runs the site file with its shipped paths.
NGINX_LOG_DIR = "/var/log/nginx"
NGINX_STATE_DIR = "/var/lib/nginx"


def with_private_dirs(dirs: dict[str, Path], command: list[str]) -> list[str]:
    """The command run in a mount namespace of its own where each directory of this machine
    named in `dirs` is replaced by the given one: a program uses the paths of the files we
    ship and the machine's own directories stay untouched. It is the same process (exec all
    the way), so signals reach the program itself. Unprivileged, a user namespace grants the
    mounts."""
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace += ["--user", "--map-current-user", "--keep-caps"]
    mounts = [
        f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for dst, src in dirs.items()
    ]
    script = " && ".join([*mounts, f"exec {shlex.join(command)}"])
    return [*namespace, "--", "sh", "-c", script]


def render_nginx_site(upstreams: list[str], listen: str, per_client_limits: bool = True) -> str:
    """deploy/nginx.conf with its one upstream server line repeated for each of `upstreams`
    (same parameters) and our listen address, nothing else changed; without
    per_client_limits also without the limit_req and limit_conn lines of the server
    (`make bench` sends everything from one address, which the real site would throttle)."""
    site = (DEPLOY / "nginx.conf").read_text()
    if not per_client_limits:
        site, limits = re.subn(r"(?m)^\s*limit_(req|conn) [^;]+;\n", "", site)
        assert limits == 2, "deploy/nginx.conf no longer has the limit lines we lift"
    site, listens = re.subn(r"(?m)^(\s*)listen\s+[^;]+;", rf"\1listen {listen};", site)

    def servers(match: re.Match) -> str:
        return "\n".join(f"{match[1]}server {upstream}{match[2]};" for upstream in upstreams)

    site, found = re.subn(r"(?m)^(\s*)server 127\.0\.0\.1:3000([^;]*);", servers, site)
    assert (listens, found) == (1, 1), "deploy/nginx.conf no longer has the lines we patch"
    return site


def nginx_command(d: Path, site: str, worker_connections: int = 2048) -> list[str]:
    """Write an nginx.conf in `d` that serves `site` (2 worker processes, every path in
    `d`, handed over to the unprivileged user) and return the command that runs it, with
    `d` as its log directory and `d`/lib as its state directory (with_private_dirs)."""
    (d / "lib").mkdir()
    (d / "booking.conf").write_text(site)
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
events {{ worker_connections {worker_connections}; }}
http {{
{temp_paths}
    include {d}/booking.conf;
}}
"""
    )
    hand_over(d)
    args = [require_program("nginx"), "-p", str(d), "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"]
    args += ["-g", f"daemon off; pid {d}/nginx.pid;"]
    return with_private_dirs({NGINX_LOG_DIR: d, NGINX_STATE_DIR: d / "lib"}, args)


def start_nginx(
    upstream_port: int, worker_connections: int = 2048, per_client_limits: bool = True
) -> Process:
    """A private nginx serving the shipped site file in front of 127.0.0.1:upstream_port
    (768 worker_connections is the nginx.conf Debian ships)."""
    workdir = PrivateDir("nginx")
    port = free_port()
    d = workdir.path
    site = render_nginx_site([f"127.0.0.1:{upstream_port}"], f"127.0.0.1:{port}", per_client_limits)
    args = nginx_command(d, site, worker_connections)
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
    hand_over(workdir.path)
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


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
