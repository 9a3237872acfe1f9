"""Everything the tests share but fixtures: routes, the admin token, waiting, servers.

Real programs only: gunicorn started the way `make run` starts it (bench/run.py uses the
same starter), and private instances of what the service is deployed with (nginx,
PgBouncer, Redis, a PostgreSQL to break), each on a free port of 127.0.0.1 from a
temporary directory, started from the files shipped in deploy/ with only ports changed
(nginx gets its own log and cache directories in a mount namespace of its own). The
machine's own services are never touched.

The fault tests keep a ledger: every request carries an Idempotency-Key, so after a fault
the clients retry what failed with the same key, and the database must then hold exactly
the bookings the clients saw.
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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psycopg2
import pytest
import requests
from requests.adapters import HTTPAdapter

from booking.db import create_database, embedded
from booking.db.queries import EVENT_LOCK_NAMESPACE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
IN_CI = os.environ.get("CI") == "true"

RESERVE = "/api/bookings/reserve"
CANCEL = "/api/bookings/cancel"
BOOKINGS = "/api/bookings"
EVENTS = "/api/events"

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# The machine's Redis, shared by the tests that need one budget across workers; each uses a
# key prefix of its own (the shared_redis fixture).
SHARED_REDIS = "redis://127.0.0.1:6379/0"

# nginx and PgBouncer drop root privileges: as root, their files must be readable by this.
UNPRIVILEGED_USER = "nobody"


def skip_or_fail(reason: str) -> None:
    """A missing service skips the test locally; in CI nothing may skip for that."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> object:
    """Poll until condition() is truthy and return its value; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def overlap(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls on parallel threads released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def post_json(url: str, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=30)


# ---------------------------------------------------------------- gunicorn


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


# ---------------------------------------------------------------- logs


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


# ---------------------------------------------------------------- deployed programs


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


# The directories of this machine the shipped nginx site writes to: its logs, and its cache
# with nginx's own temporary files (deploy/nginx.conf). A private nginx gets its own in their
# place (with_private_dirs), so it runs the site file with its shipped paths.
NGINX_LOG_DIR = "/var/log/nginx"
NGINX_STATE_DIR = "/var/lib/nginx"


def with_private_dirs(dirs: dict[str, Path], command: list[str]) -> list[str]:
    """The command run in a mount namespace of its own where each directory of this machine
    named in `dirs` is replaced by the given one: a program uses the paths of the files we ship
    and the machine's own directories stay untouched. It is the same process (exec all the
    way), so signals reach the program itself. Unprivileged, a user namespace grants the
    mounts."""
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace += ["--user", "--map-current-user", "--keep-caps"]
    mounts = [
        f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for dst, src in dirs.items()
    ]
    script = " && ".join([*mounts, f"exec {shlex.join(command)}"])
    return [*namespace, "--", "sh", "-c", script]


def render_nginx_site(upstream_port: int, listen_port: int) -> str:
    """deploy/nginx.conf listening on 127.0.0.1:listen_port in front of 127.0.0.1:upstream_port;
    nothing else changed."""
    site = (DEPLOY / "nginx.conf").read_text()
    site, listens = re.subn(
        r"(?m)^(\s*)listen\s+[^;]+;", rf"\1listen 127.0.0.1:{listen_port};", site
    )
    site, upstreams = re.subn(
        r"server 127\.0\.0\.1:3000\b", f"server 127.0.0.1:{upstream_port}", site
    )
    assert (listens, upstreams) == (1, 1), "deploy/nginx.conf no longer has the lines we patch"
    return site


def start_nginx(
    upstream_port: int,
    worker_connections: int = 2048,
    site: Callable[[str], str] = lambda site: site,
) -> Process:
    """A private nginx serving the shipped site file in front of 127.0.0.1:upstream_port
    (768 worker_connections is the nginx.conf Debian ships). Its logs and cache are in its
    directory: booking.access.log, booking.error.log, lib/booking. `site` may change the
    file further (bench/run.py lifts the per-client limits); no test does."""
    nginx = require_program("nginx")
    workdir = PrivateDir("nginx")
    port = free_port()
    d = workdir.path
    (d / "lib").mkdir()
    (d / "booking.conf").write_text(site(render_nginx_site(upstream_port, port)))
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
    workdir.hand_over()
    args = [nginx, "-p", str(d), "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"]
    args += ["-g", f"daemon off; pid {d}/nginx.pid;"]
    private = {NGINX_LOG_DIR: d, NGINX_STATE_DIR: d / "lib"}
    process = Process(with_private_dirs(private, args), workdir, port, d / "stdout.log")
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


# ---------------------------------------------------------------- faults

# The service's own limits in the fault tests: a request may take the connect timeout plus
# the statement timeout (and its second of grace, booking.db); the clients allow twice
# that for queueing and some slack, so a client timeout means a request hung past what
# the configuration promises.
STATEMENT_TIMEOUT_MS = 1500
CONNECT_TIMEOUT_S = 2
CLIENT_TIMEOUT_S = 2 * (CONNECT_TIMEOUT_S + STATEMENT_TIMEOUT_MS / 1000) + 4
SERVICE_ENV = {
    "DB_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
    "DB_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
}

# Figures printed at the end of the run, one line per test that reported.
SUMMARY: list[str] = []


def report(name: str, **figures: object) -> None:
    line = f"{name}: " + ", ".join(f"{key}={value}" for key, value in figures.items())
    SUMMARY.append(line)
    print(line)


class PrivatePostgres:
    """An embedded PostgreSQL of our own, in a temporary directory, free to be broken."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server_url = embedded.database_url(data_dir)
        self.database_url = create_database(self.server_url, "booking_faults")

    def stop(self, mode: str) -> None:
        embedded.stop(self.data_dir, mode)

    def start(self) -> None:
        embedded.start(self.data_dir)

    def connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.database_url, application_name="fault-test")
        conn.autocommit = True
        return conn

    def sql(self, query: str, params: object = None) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def make_events(self, *seats: int) -> list[int]:
        return [
            self.sql(
                "INSERT INTO events (name, total_seats) VALUES ('fault', %s) RETURNING id", (n,)
            )[0][0]
            for n in seats
        ]

    def serving_worker_pids(self) -> set[int]:
        """Worker pids that hold a connection now (application_name booking:<pid>)."""
        rows = self.sql(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE application_name LIKE 'booking:%%' AND datname = current_database()"
        )
        return {int(name.split(":", 1)[1]) for (name,) in rows}

    def processes(self) -> list[int]:
        """The postmaster first, then every process it has started."""
        pid_file = Path(self.data_dir, "pg", "postmaster.pid")
        postmaster = int(pid_file.read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        )
        return [postmaster, *(int(pid) for pid in children.stdout.split())]

    def freeze(self) -> list[int]:
        """Stop every PostgreSQL process in its tracks, as a hung host or lost network."""
        frozen = self.processes()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    def thaw(self, frozen: list[int]) -> None:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Attempt:
    status: int | None  # None: the connection broke (a killed worker)
    body: dict | None
    replayed: bool
    sent_at: int  # Ledger.epoch when it was sent
    raw: bytes = b""  # the body as sent, for byte-for-byte comparison of replays


@dataclass
class Request:
    path: str
    body: dict
    key: str | None = field(default_factory=lambda: uuid.uuid4().hex)  # None: no header
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def final(self) -> Attempt | None:
        """The last business outcome: not a 5xx, a broken connection or a key in flight."""
        done = [a for a in self.attempts if is_outcome(a)]
        return done[-1] if done else None


def is_outcome(attempt: Attempt) -> bool:
    return (
        attempt.status is not None
        and attempt.status < 500
        and attempt.body != {"error": "idempotency_key_in_flight"}
    )


class Ledger:
    """Every request the clients sent and every answer they got, checked as it comes."""

    def __init__(self, allow_broken_connections: bool = False) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.sent = 0
        self.allow_broken_connections = allow_broken_connections
        self.epoch = 0

    def violation(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    def send(self, session: requests.Session, url: str, request: Request) -> Attempt:
        """One attempt; a 5xx must be 503 db_unavailable and never a hang."""
        with self.lock:
            self.sent += 1
            epoch = self.epoch
        headers = {"Idempotency-Key": request.key} if request.key else {}
        try:
            response = session.post(
                url + request.path, json=request.body, headers=headers, timeout=CLIENT_TIMEOUT_S
            )
        except requests.Timeout:
            self.violation(f"hang: {request.path} {request.body} past {CLIENT_TIMEOUT_S}s")
            attempt = Attempt(None, None, False, epoch)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # A worker killed before or while it wrote the answer.
            if not self.allow_broken_connections:
                self.violation(f"broken connection: {request.path} {request.body}: {exc}")
            attempt = Attempt(None, None, False, epoch)
        else:
            attempt = self._check(request, response, epoch)
        with self.lock:
            request.attempts.append(attempt)
        return attempt

    def _check(self, request: Request, response: requests.Response, epoch: int) -> Attempt:
        try:
            body = response.json()
        except ValueError:
            self.violation(f"not JSON: {response.status_code} {response.text[:200]!r}")
            body = None
        status = response.status_code
        if status >= 500 and (status, body) != (503, {"error": "db_unavailable"}):
            self.violation(f"{status} {body} for {request.path} {request.body}")
        elif status not in (200, 201, 404, 409, 503):
            self.violation(f"unexpected {status} {body} for {request.path} {request.body}")
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        attempt = Attempt(status, body, replayed, epoch, response.content)
        previous = request.final
        if previous is not None and is_outcome(attempt) and request.key:
            # A key runs once; every other answer is a byte-for-byte replay of that run.
            if (status, response.content) != (previous.status, previous.raw):
                self.violation(f"key {request.key} answered {attempt} after {previous}")
            runs = [a for a in request.attempts if is_outcome(a) and not a.replayed]
            if not replayed and runs:
                self.violation(f"key {request.key} ran twice: {attempt} and {runs[0]}")
        return attempt

    def retry_failed(self, session: requests.Session, url: str, timeout: float = 60) -> int:
        """Retry every request without a final answer, same key, until each has one."""
        retried = 0
        deadline = time.monotonic() + timeout
        for request in list(self.requests):
            while request.final is None:
                if time.monotonic() > deadline:
                    self.violation(f"no answer after retries: {request.key} {request.body}")
                    break
                self.send(session, url, request)
                retried += 1
        return retried

    def record(self, request: Request) -> Request:
        with self.lock:
            self.requests.append(request)
        return request

    def mark(self) -> int:
        """Start a new epoch; attempts remember the epoch they were sent in."""
        with self.lock:
            self.epoch += 1
            return self.epoch

    def statuses(self, since_epoch: int = 0) -> Counter:
        with self.lock:
            return Counter(
                a.status for r in self.requests for a in r.attempts if a.sent_at >= since_epoch
            )

    def committed_despite_failure(self) -> int:
        """Requests whose failed attempt had in fact committed: the retry replayed it."""
        return sum(
            1
            for r in self.requests
            if r.attempts
            and (r.attempts[0].status is None or r.attempts[0].status >= 500)
            and r.final is not None
            and r.final.replayed
        )


class ClientThreads:
    """Client threads, run from `with` until it ends; a client that crashes is reported as a
    violation, for a client that dies would silently stop checking."""

    JOIN_TIMEOUT_S = 60

    def __init__(self, clients: int) -> None:
        self.stop_flag = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Let every client finish what it has in hand."""
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=self.JOIN_TIMEOUT_S)

    def _run(self, n: int) -> None:
        try:
            self.client(n)
        except Exception as exc:
            self.violation(f"client {n} crashed: {exc!r}")
            raise

    def client(self, n: int) -> None:
        raise NotImplementedError

    def violation(self, message: str) -> None:
        raise NotImplementedError


class Traffic(ClientThreads):
    """Client threads booking seats for fresh users, each request with its own key."""

    def __init__(self, url: str, ledger: Ledger, event_ids: list[int], threads: int) -> None:
        self.url = url
        self.ledger = ledger
        self.event_ids = event_ids
        super().__init__(threads)

    def violation(self, message: str) -> None:
        self.ledger.violation(message)

    def client(self, n: int) -> None:
        with requests.Session() as session:
            i = 0
            while not self.stop_flag.is_set():
                event_id = self.event_ids[i % len(self.event_ids)]
                body = {"event_id": event_id, "user_id": f"t{n}-u{i}"}
                self.ledger.send(session, self.url, self.ledger.record(Request(RESERVE, body)))
                i += 1


def check_database(pg: PrivatePostgres, ledger: Ledger, event_ids: list[int]) -> list[str]:
    """The database holds exactly what the clients were told, and no event is oversold."""
    problems: list[str] = []
    active = dict(
        (booking_id, (event_id, user_id))
        for booking_id, event_id, user_id in pg.sql(
            "SELECT id, event_id, user_id FROM bookings WHERE event_id = ANY(%s)", (event_ids,)
        )
    )
    cancelled = {
        booking_id
        for (booking_id,) in pg.sql(
            "SELECT id FROM cancelled_bookings WHERE event_id = ANY(%s)", (event_ids,)
        )
    }
    booked_by_client: dict[int, tuple] = {}
    cancelled_by_client: set[int] = set()
    for request in ledger.requests:
        final = request.final
        if final is None:
            problems.append(f"request never answered: {request.key} {request.body}")
        elif request.path == RESERVE and final.status == 201:
            booking_id = final.body["booking_id"]
            if booking_id in booked_by_client:
                problems.append(f"two keys got booking {booking_id}")
            booked_by_client[booking_id] = (request.body["event_id"], request.body["user_id"])
        elif request.path == CANCEL and final.status == 200:
            cancelled_by_client.add(final.body["booking_id"])
    expected_active = {
        b: owner for b, owner in booked_by_client.items() if b not in cancelled_by_client
    }
    if active != expected_active:
        lost = set(expected_active) - set(active)
        phantom = set(active) - set(expected_active)
        problems.append(f"bookings differ from client view: lost {lost}, phantom {phantom}")
    if cancelled != cancelled_by_client:
        problems.append(f"cancellations differ: db {cancelled ^ cancelled_by_client}")
    problems += check_counters(pg, event_ids)
    return problems


def check_counters(pg: PrivatePostgres, event_ids: list[int]) -> list[str]:
    """booked <= total_seats, booked = count(*), one active seat per user and event,
    and no stored idempotent response names a booking another key also names."""
    problems = [
        f"event {event_id}: total {total}, counter {booked}, rows {rows}"
        for event_id, total, booked, rows in pg.sql(
            """
            SELECT e.id, e.total_seats, s.booked,
                   (SELECT count(*) FROM bookings b WHERE b.event_id = e.id)
            FROM events e JOIN event_seats s ON s.event_id = e.id
            WHERE e.id = ANY(%s)
            """,
            (event_ids,),
        )
        if not (booked == rows <= total)
    ]
    problems += [
        f"user {user_id} holds {n} seats for event {event_id}"
        for event_id, user_id, n in pg.sql(
            "SELECT event_id, user_id, count(*) FROM bookings WHERE event_id = ANY(%s) "
            "GROUP BY 1, 2 HAVING count(*) > 1",
            (event_ids,),
        )
    ]
    problems += [
        f"booking {booking_id} stored under {n} keys"
        for booking_id, n in pg.sql(
            "SELECT body->>'booking_id', count(*) FROM idempotency_keys "
            "WHERE status = 201 GROUP BY 1 HAVING count(*) > 1"
        )
    ]
    return problems


def backends_waiting_for_event_lock(pg: PrivatePostgres, event_id: int) -> list[int]:
    """The booking backends queued for the per-event lock of event_id."""
    rows = pg.sql(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = %s "
        "AND l.objid = %s AND a.application_name LIKE 'booking:%%'",
        (EVENT_LOCK_NAMESPACE, event_id),
    )
    return [pid for (pid,) in rows]


def all_workers_serving(pg: PrivatePostgres, server: Gunicorn, send: Callable[[], None]) -> None:
    """Send requests until every current worker has a connection again."""

    def every_worker_connected() -> bool:
        send()
        return set(server.worker_pids()) <= pg.serving_worker_pids()

    wait_for(every_worker_connected, "every worker to reconnect on its own", timeout=60)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def raw_http(
    port: int, request: bytes, source: str = "127.0.0.1", half_close: bool = False
) -> tuple[int | None, dict[str, str], bytes]:
    """Send bytes as they are; return the status (None: no HTTP answer), headers and body.

    half_close: say "no more to send" after the request, for servers that wait for it.
    """
    with socket.create_connection(
        (("127.0.0.1", port)), timeout=30, source_address=(source, 0)
    ) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # nginx resets what it did not read, after answering
            pass
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        return None, {}, body
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body
