"""Beyond one machine: an HA PostgreSQL pair under pg_auto_failover, and hosts of our own
as network namespaces; the clients that book through their faults are harness.clients.Load.

The pair is private: a monitor and two nodes, each a host of its own (a network
namespace, see Network) with its own data directory under one temporary directory, run by
pg_autoctl (Debian's pg-auto-failover-cli and postgresql-15-auto-failover) as the user
`postgres`. The monitor runs with the settings operators are given in deploy/. The
machine's own PostgreSQL is never touched.
"""

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

from harness import ROOT, free_port, skip_or_fail, wait_for
from harness.database import sql

# The user PostgreSQL runs as when the tests run as root (initdb refuses root).
POSTGRES_USER = "postgres"
# The monitor's failover timing, as deployed (docs/scaling.md).
MONITOR_SETTINGS = ROOT / "deploy" / "pg_auto_failover-monitor.conf"


def postgres_bindir() -> Path:
    """The PostgreSQL whose server has the pgautofailover extension installed."""
    if shutil.which("pg_autoctl") is None:
        skip_or_fail("pg_autoctl is not installed (apt-get install pg-auto-failover-cli)")
    controls = sorted(glob.glob("/usr/share/postgresql/*/extension/pgautofailover.control"))
    if not controls:
        skip_or_fail("no pgautofailover extension (apt-get install postgresql-15-auto-failover)")
    version = Path(controls[-1]).parts[-3]
    return Path(f"/usr/lib/postgresql/{version}/bin")


def kill_outright(pids: list[int]) -> None:
    """Stop every process at once, then kill them: none gets to act on the others' death."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


class PgAutoFailover:
    """A monitor and two PostgreSQL nodes, "a" and "b", managed by pg_autoctl, each on a
    host of its own; the test process (and the service it starts) is the client."""

    NODES = ("a", "b")

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.net = Network({"monitor": 2, "a": 3, "b": 4})
        self.host = self.net.address
        # Short, for the Unix sockets that live in it; ours, not pytest's numbered ones.
        self.dir = Path(tempfile.mkdtemp(prefix="booking-ha-"))
        shutil.chown(self.dir, POSTGRES_USER, POSTGRES_USER)
        # A port each, so that a connection's server port names its node.
        self.ports = {name: free_port() for name in ("monitor", *self.NODES)}
        self.monitor_url = f"postgresql://autoctl_node@{self._hostport('monitor')}"
        self.monitor_url += "/pg_auto_failover"
        hosts = ",".join(self._hostport(name) for name in self.NODES)
        # What the service is given: libpq tries both and keeps the one that takes writes.
        self.url = f"postgresql://postgres@{hosts}/booking?target_session_attrs=read-write"
        self.procs: dict[str, subprocess.Popen] = {}

    def _hostport(self, name: str) -> str:
        return f"{self.host[name]}:{self.ports[name]}"

    def node_url(self, name: str, database: str = "booking") -> str:
        return f"postgresql://postgres@{self._hostport(name)}/{database}"

    # --- running pg_autoctl -------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        d = str(self.dir)
        return {
            "PATH": f"{self.bindir}:{os.environ['PATH']}",
            "HOME": d,
            "XDG_CONFIG_HOME": f"{d}/config",
            "XDG_DATA_HOME": f"{d}/share",
            "XDG_RUNTIME_DIR": f"{d}/run",
            # pg_autoctl reaches its local PostgreSQL through the socket in our directory.
            "PGHOST": d,
            "PGUSER": "postgres",
            "LANG": "C.UTF-8",
        }

    def _on(self, name: str, *args: str) -> list[str]:
        """The command run on host `name` as POSTGRES_USER; ip and setpriv exec it in
        place, so its process is the one started."""
        user = ["--reuid", POSTGRES_USER, "--regid", POSTGRES_USER, "--init-groups"]
        return ["ip", "netns", "exec", self.net.ns(name), "setpriv", *user, *args]

    def _run(self, name: str, *args: str) -> None:
        result = subprocess.run(
            self._on(name, *args), cwd=self.dir, env=self._env(), capture_output=True, text=True
        )
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"

    def _spawn(self, name: str, *args: str) -> None:
        """A long-running pg_autoctl, in a process group of its own."""
        log = open(self.dir / f"{name}.log", "a")  # noqa: SIM115 - the child holds it
        self.procs[name] = subprocess.Popen(
            self._on(name, "pg_autoctl", *args),
            cwd=self.dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _initdb(self, name: str) -> None:
        """initdb ourselves, so that sockets, memory and access are ours before the first
        start."""
        pgdata = self.dir / name
        initdb = str(self.bindir / "initdb")
        self._run(name, initdb, "-D", str(pgdata), "-U", "postgres", "-A", "trust")
        with open(pgdata / "postgresql.conf", "a") as conf:
            conf.write(
                f"unix_socket_directories = '{self.dir}'\n"
                f"listen_addresses = '{self.host[name]}'\n"
                # pg_autoctl would size it to a quarter of this machine's memory.
                "shared_buffers = 128MB\n"
                # A standby's base backup starts after a checkpoint: not spread over minutes.
                "checkpoint_completion_target = 0\n"
            )
            if name == "monitor":
                conf.write(MONITOR_SETTINGS.read_text())
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.net.subnet}.0/24 trust\n")

    def start(self) -> None:
        self.net.build()
        self._initdb("monitor")
        self._run(
            "monitor", "pg_autoctl", "create", "monitor", "--pgdata", str(self.dir / "monitor"),
            "--pgport", str(self.ports["monitor"]), *self._common("monitor"),
        )  # fmt: skip
        self._spawn("monitor", "run", "--pgdata", str(self.dir / "monitor"))
        wait_for(self._monitor_answers, "the monitor", 60)
        self._initdb("a")
        for name in self.NODES:  # "b" is made a standby by a base backup of "a"
            self._spawn(
                name, "create", "postgres", "--run", "--pgdata", str(self.dir / name),
                "--pgport", str(self.ports[name]), "--name", name, "--dbname", "booking",
                "--username", "postgres", "--monitor", self.monitor_url, *self._common(name),
            )  # fmt: skip
            wait_for(lambda n=name: n in self.states(), f"node {name} to register", 60)
        self.wait_for_states({"a": "primary", "b": "secondary"})

    def _common(self, name: str) -> list[str]:
        address = self.host[name]
        return [
            "--auth", "trust", "--no-ssl", "--hostname", address, "--listen", address,
            "--pgctl", str(self.bindir / "pg_ctl"),
        ]  # fmt: skip

    # --- the monitor's view -------------------------------------------------------------

    def _monitor_answers(self) -> bool:
        try:
            return bool(sql(self.monitor_url, "SELECT 1"))
        except psycopg2.OperationalError:
            return False

    def states(self) -> dict[str, tuple[str, str]]:
        """node name -> (reported state, goal state), as the monitor has them."""
        rows = sql(
            self.monitor_url, "SELECT nodename, reportedstate, goalstate FROM pgautofailover.node"
        )
        return {name: (reported, goal) for name, reported, goal in rows}

    def wait_for_states(self, wanted: dict[str, str], timeout: float = 180) -> None:
        """Until each node has reached the state wanted and is assigned no other."""

        def reached() -> bool:
            states = self.states()
            return all(states.get(name) == (state, state) for name, state in wanted.items())

        try:
            wait_for(reached, f"states {wanted}", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; monitor says {self.states()}") from None

    def last_event(self) -> int:
        (eventid,) = sql(self.monitor_url, "SELECT max(eventid) FROM pgautofailover.event")[0]
        return eventid

    def goal_states_since(self, eventid: int) -> list[tuple[str, str]]:
        """(node name, goal state) the monitor assigned after event `eventid`, in order."""
        query = "SELECT nodename, goalstate FROM pgautofailover.event WHERE eventid > %s"
        return sql(self.monitor_url, query + " ORDER BY eventid", (eventid,))

    def primary(self) -> str:
        (name,) = [n for n, (reported, _) in self.states().items() if reported == "primary"]
        return name

    def synchronous_standbys(self, name: str) -> list[tuple[str, str]]:
        """(setting, sync_state of each standby) on node `name`."""
        (setting,) = sql(self.node_url(name), "SHOW synchronous_standby_names")[0]
        states = sql(self.node_url(name), "SELECT sync_state FROM pg_stat_replication")
        return [setting, *(state for (state,) in states)]

    # --- faults -------------------------------------------------------------------------

    def host_pids(self, name: str) -> list[int]:
        """pg_autoctl and its services, the postmaster, and every PostgreSQL process.

        PostgreSQL's children start sessions of their own, so they are found through the
        postmaster rather than the process group.
        """
        group = subprocess.run(
            ["pgrep", "-g", str(self.procs[name].pid)], capture_output=True, text=True
        )
        pids = [int(p) for p in group.stdout.split()]
        pid_file = self.dir / name / "postmaster.pid"
        if pid_file.exists():
            postmaster = int(pid_file.read_text().split()[0])
            pids += [postmaster, *children(postmaster)]
        return sorted(set(pids))

    def kill_host(self, name: str) -> float:
        """The node's machine is gone: its manager and PostgreSQL die at the same instant.

        Returns the time.monotonic() of the kill.
        """
        kill_outright(self.host_pids(name))
        killed_at = time.monotonic()
        self.procs[name].wait(timeout=30)
        return killed_at

    def restart(self, name: str) -> None:
        """The node's machine is back: pg_autoctl starts, and the monitor tells it its role."""
        self._spawn(name, "run", "--pgdata", str(self.dir / name))

    def cut_off(self, name: str, seconds: float) -> tuple[float, float]:
        """The node's network link is down for `seconds`, then up again whatever happens.

        Returns the time.monotonic() of the cut and of the link's return.
        """
        ip("-n", self.net.ns(name), "link", "set", "eth0", "down")
        cut_at = time.monotonic()
        try:
            time.sleep(seconds)  # the fault itself, not a wait for something to happen
        finally:
            ip("-n", self.net.ns(name), "link", "set", "eth0", "up")
        return cut_at, time.monotonic()

    def close(self) -> None:
        """Stop every node, then the monitor; kill what does not stop; remove everything,
        the hosts too."""
        for name in [*self.NODES, "monitor"]:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)  # pg_autoctl stops its PostgreSQL (fast)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_outright(self.host_pids(name))
                proc.wait(timeout=30)
        self.net.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-40:])
            for path in sorted(self.dir.glob("*.log"))
        )


# --- hosts of our own: network namespaces on one bridge --------------------------------


def require_root_and_netns() -> None:
    if os.geteuid() != 0:
        skip_or_fail("building hosts with `ip netns` needs root")
    if shutil.which("ip") is None:
        skip_or_fail("`ip` is not installed (apt-get install iproute2)")


def postgres_server_bindir() -> Path:
    servers = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not servers:
        skip_or_fail("no PostgreSQL server (apt-get install postgresql-15)")
    return Path(servers[-1]).parent


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr}"


class Network:
    """Hosts as network namespaces, each with one address on a bridge of our own; the
    test process joins that bridge as the client (10.213.<n>.1).

    Everything is named after <n>, picked from the process id so that concurrent runs
    do not meet: namespaces bk<n>-<host>, the client's link bk<n>-client.
    """

    def __init__(self, hosts: dict[str, int]) -> None:
        require_root_and_netns()
        self.n = 20 + os.getpid() % 200
        self.subnet = f"10.213.{self.n}"
        self.address = {name: f"{self.subnet}.{last}" for name, last in hosts.items()}
        self.client_address = f"{self.subnet}.1"
        self.switch = f"bk{self.n}-switch"
        self.client_link = f"bk{self.n}-client"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.dir = Path(tempfile.mkdtemp(prefix="booking-hosts-"))
        self.dir.chmod(0o755)

    def ns(self, host: str) -> str:
        return f"bk{self.n}-{host}"

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def build(self) -> None:
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "name", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for host, address in self.address.items():
            self._add_namespace(self.ns(host))
            ip("-n", self.ns(host), "link", "add", "name", "eth0", "type", "veth",
               "peer", "name", host, "netns", self.switch)  # fmt: skip
            ip("-n", self.ns(host), "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", self.ns(host), "link", "set", "eth0", "up")
            self._plug(host)
        ip("link", "add", "name", self.client_link, "type", "veth",
           "peer", "name", "client", "netns", self.switch)  # fmt: skip
        ip("addr", "add", f"{self.client_address}/24", "dev", self.client_link)
        ip("link", "set", self.client_link, "up")
        self._plug("client")

    def add_client_addresses(self, count: int) -> list[str]:
        """More addresses for the client, one per client thread: 10.213.<n>.100 on."""
        addresses = [f"{self.subnet}.{100 + i}" for i in range(count)]
        for address in addresses:
            ip("addr", "add", f"{address}/24", "dev", self.client_link)
        return addresses

    def _plug(self, port: str) -> None:
        ip("-n", self.switch, "link", "set", "dev", port, "master", "br0")
        ip("-n", self.switch, "link", "set", "dev", port, "up")

    def spawn(
        self, host: str, args: list[str], log: Path, env: dict | None = None, user: str = ""
    ) -> subprocess.Popen:
        """A program on a host, in a process group of its own."""
        prefix = ["ip", "netns", "exec", self.ns(host)]
        if user:
            prefix += ["runuser", "-u", user, "--"]
        with open(log, "a") as out:
            proc = subprocess.Popen(
                [*prefix, *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """The program and every process of its group die at once."""
        group = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
        kill_outright([proc.pid, *(int(p) for p in group.stdout.split())])
        proc.wait(timeout=30)

    def close(self) -> None:
        """Every process we started, every process left in our namespaces, the namespaces
        and the client's link: gone, whatever state the test left them in."""
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
        for name in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            kill_outright([int(p) for p in pids.stdout.split()])
        subprocess.run(["ip", "link", "del", self.client_link], capture_output=True)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of ours is still there (nothing, after close())."""
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        found = [line.split()[0] for line in names.splitlines() if line.startswith(f"bk{self.n}-")]
        link = subprocess.run(["ip", "link", "show", self.client_link], capture_output=True)
        if link.returncode == 0:
            found.append(self.client_link)
        return found + [str(p.pid) for p in self.procs if p.poll() is None]
