"""docs/deploy.md, run as written on a fresh Debian 12: its `sh` blocks top to bottom in one
shell, as a user who may sudo, in a container booted with systemd as PID 1.

The container is made here with debootstrap and booted with systemd-nspawn on a private
network (its 127.0.0.1 is its own: its PostgreSQL, Redis and nginx never meet the
machine's). It has no way out, so what the page downloads is fetched beforehand into the
container: the Debian packages the page installs (into apt's cache, with the package
lists) and the Python wheels of the project (a wheelhouse named in /etc/pip.conf). The one
word replaced in the page is `<repository>`: a git repository in the container holding the
working tree. Minutes long, so under its own marker: `make sandbox`, run by CI.
"""

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from configparser import ConfigParser
from pathlib import Path

import pytest

from harness import ROOT, skip_or_fail, wait_for
from harness.servers import require_program

pytestmark = pytest.mark.sandbox

DOC = ROOT / "docs" / "deploy.md"
MIRROR = "http://deb.debian.org/debian"
# Debian 12 as a server image has it: systemd as init, sudo, and a user allowed to use it.
BASE_PACKAGES = ["systemd-sysv", "dbus", "sudo", "ca-certificates"]
SOURCES = f"""deb {MIRROR} bookworm main
deb {MIRROR} bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
"""
OPERATOR = "debian"
HOSTNAME = "booking-sandbox"
REPOSITORY = "/srv/booking"
WHEELHOUSE = "/var/cache/booking-wheels"
# The services the page leaves enabled and running.
SERVICES = ["postgresql", "pgbouncer", "redis-server", "booking", "nginx", "booking-purge.timer"]


def page_script() -> str:
    blocks = re.findall(r"(?ms)^```sh\n(.*?)^```", DOC.read_text())
    assert blocks, "docs/deploy.md has no sh block"
    script = "\n".join(blocks)
    assert script.count("<repository>") == 1
    return script.replace("<repository>", REPOSITORY)


def page_packages(script: str) -> list[str]:
    lines = re.findall(r"apt-get install -y ([^#\n]+)", script)
    assert len(lines) == 1, lines
    return lines[0].split()


def requirements() -> list[str]:
    """What `pip install -e .` needs: the build backend and the install_requires."""
    setup = ConfigParser()
    setup.read(ROOT / "setup.cfg")
    needed = setup["options"]["install_requires"].split("\n")
    build = re.search(r"requires = \[(.*)\]", (ROOT / "pyproject.toml").read_text())[1]
    return [r for r in needed if r] + re.findall(r'"([^"]+)"', build) + ["wheel"]


def run(command: list[str], timeout: float = 600, **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise AssertionError(
            f"{command[:6]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"[-6000:]
        )
    return result.stdout


class Container:
    """A fresh Debian 12 root in a directory, then booted; every command runs inside."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nspawn: subprocess.Popen | None = None
        self.leader = 0

    def chroot(self, *command: str) -> str:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
        return run(["chroot", str(self.root), *command], env=env)

    def make(self, packages: list[str]) -> None:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             "bookworm", str(self.root), MIRROR], timeout=900)  # fmt: skip
        etc = self.root / "etc"
        (etc / "apt" / "sources.list").write_text(SOURCES)
        (etc / "hostname").write_text(f"{HOSTNAME}\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
        self.chroot("apt-get", "update", "-q")
        self.chroot("apt-get", "install", "-q", "-y", "--download-only", *packages)
        self.chroot("useradd", "--create-home", "--shell", "/bin/bash", OPERATOR)
        sudoers = etc / "sudoers.d" / OPERATOR
        sudoers.write_text(f"{OPERATOR} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
        self.fetch_wheels()
        (etc / "pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {WHEELHOUSE}\n")
        self.snapshot_working_tree(self.root / REPOSITORY.lstrip("/"))

    def fetch_wheels(self) -> None:
        """The project's wheels, for a container with no network, chosen by the pip and the
        Python the page installs there: run in an overlay of the root that is thrown away."""
        scratch = Path(tempfile.mkdtemp(prefix="booking-wheels-", dir="/var/tmp"))
        try:
            upper, work, merged = (scratch / name for name in ("upper", "work", "merged"))
            for d in (upper, work, merged):
                d.mkdir()
            venv = f"/tmp/pip-{os.getpid()}"
            commands = [
                f"mount -t overlay overlay -o lowerdir={self.root},upperdir={upper},"
                f"workdir={work} {merged}",
                f"chroot {merged} apt-get install -q -y python3-venv",
                f"chroot {merged} python3 -m venv {venv}",
                # This machine's certificates: its way out may be a proxy it trusts.
                f"cp /etc/ssl/certs/ca-certificates.crt {merged}{venv}/ca.crt",
                f"chroot {merged} {venv}/bin/pip download --quiet --only-binary=:all:"
                f" --cert {venv}/ca.crt --dest {WHEELHOUSE} {shlex.join(requirements())}",
                f"cp -r {merged}{WHEELHOUSE} {self.root}{WHEELHOUSE}",
            ]
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
            script = " && ".join(commands)
            run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def snapshot_working_tree(repo: Path) -> None:
        """The working tree as it is (committed or not, ignored files left out), committed."""
        listed = run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=ROOT)
        for name in filter(None, listed.split("\0")):
            source = ROOT / name
            if source.is_file():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, repo / name)
        git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@invalid"]
        run([*git, "init", "-q"])
        run([*git, "add", "-A"])
        run([*git, "commit", "-q", "-m", "working tree"])

    def boot(self, log: Path) -> None:
        with open(log, "w") as out:
            self.nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    "--boot",
                    "--directory",
                    str(self.root),
                    "--private-network",
                    "--register=no",
                    "--keep-unit",
                    f"--hostname={HOSTNAME}",
                    "--console=passive",
                ],  # fmt: skip
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def leader() -> int:
            if self.nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited:\n{log.read_text()}")
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
            for pid in children.read_text().split():
                # nspawn's own helper comes first; the container's PID 1 execs systemd.
                with contextlib.suppress(FileNotFoundError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
            return 0

        self.leader = wait_for(leader, "the container's init", 60)
        # systemctl needs the manager's socket, made early in the boot.
        socket = Path(f"/proc/{self.leader}/root/run/systemd/private")
        wait_for(socket.exists, "systemd's socket in the container", 60)

        def booted() -> bool:
            state = self.shell("systemctl is-system-running || true").strip()
            return state in {"running", "degraded"}

        try:
            wait_for(booted, "the container's boot", 180)
        except AssertionError:
            jobs = self.shell("systemctl list-jobs --no-pager || true")
            raise AssertionError(f"the container did not finish booting:\n{jobs}") from None

    def shell(self, script: str, user: str = "root", timeout: float = 120) -> str:
        """A bash script run inside, as `user` from their home, with a login's environment."""
        home = "/root" if user == "root" else f"/home/{user}"
        command = ["nsenter", "--target", str(self.leader), "--all", "--"]
        command += ["runuser", "-u", user, "--", "env", "-i", f"HOME={home}", f"USER={user}"]
        command += ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TERM=dumb"]
        command += ["bash", "-euo", "pipefail", "-c", f'cd "$HOME"\n{script}']
        return run(command, timeout=timeout)

    def stop(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)  # an orderly shutdown of the container
            try:
                self.nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(timeout=30)


@pytest.fixture
def container(tmp_path) -> Iterator[Container]:
    if os.geteuid() != 0:
        skip_or_fail("running docs/deploy.md in a container needs root")
    for program in ("debootstrap", "systemd-nspawn", "nsenter", "git"):
        require_program(program)
    root = Path(tempfile.mkdtemp(prefix="booking-sandbox-", dir="/var/tmp"))
    root.chmod(0o755)  # the container's /, which its services' users must traverse
    box = Container(root)
    try:
        yield box
    finally:
        box.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_deployment_page_works_verbatim_on_a_fresh_debian_12(container, tmp_path):
    script = page_script()
    container.make(page_packages(script))
    container.boot(tmp_path / "console.log")

    transcript = tmp_path / "deploy.log"
    try:
        output = container.shell(f"set -x\n{script}", user=OPERATOR, timeout=900)
    except AssertionError:
        journal = container.shell("journalctl --no-pager -n 200 || true")
        raise AssertionError(f"the page failed; the container's journal:\n{journal}") from None
    transcript.write_text(output)

    # Every service the page sets up is enabled for the next boot and running now.
    units = " ".join(SERVICES)
    assert container.shell(f"systemctl is-enabled {units}").split() == ["enabled"] * len(SERVICES)
    assert container.shell(f"systemctl is-active {units}").split() == ["active"] * len(SERVICES)

    # Room for a rush: nginx runs with the connections the page gives it, not Debian's 768.
    settings = container.shell("grep -E 'worker_(connections|rlimit)' /etc/nginx/nginx.conf")
    assert "worker_connections 4096;" in settings and "worker_rlimit_nofile 16384;" in settings

    # A booking from the machine itself through nginx, gunicorn, PgBouncer to PostgreSQL.
    admin = "-H 'Authorization: Bearer CHANGE-ME-TOO'"
    json_body = "-H 'Content-Type: application/json'"
    created = container.shell(
        f"curl -fsS -X POST http://127.0.0.1/api/events {admin} {json_body}"
        """ -d '{"name": "Sandbox", "total_seats": 1}'"""
    )
    event_id = json.loads(created)["event_id"]
    booked = container.shell(
        f"curl -sS -o /dev/null -w '%{{http_code}}' -X POST http://127.0.0.1/api/bookings/reserve"
        f""" {json_body} -d '{{"event_id": {event_id}, "user_id": "alice"}}'"""
    )
    assert booked == "201"
    headers = container.shell("curl -fsSi http://127.0.0.1/health")
    assert re.search(r"(?im)^X-Request-ID: \S+", headers), headers

    # The purge the timer starts runs to its end, under the unit's sandboxing.
    container.shell("systemctl start booking-purge.service")
    result = container.shell("systemctl show -p Result --value booking-purge.service")
    assert result.strip() == "success"

    # A reload keeps the master and replaces every worker, and the service is ready again.
    def processes() -> tuple[str, set[str]]:
        main = container.shell("systemctl show -p MainPID --value booking").strip()
        workers = container.shell(f"cat /proc/{main}/task/{main}/children").split()
        return main, set(workers)

    main, workers = processes()
    assert main != "0" and workers
    container.shell("systemctl reload booking")

    def replaced() -> bool:
        new_main, new_workers = processes()
        return new_main == main and bool(new_workers) and not new_workers & workers

    wait_for(replaced, "the workers replaced by the reload")
    container.shell("curl -fsS http://127.0.0.1:3000/ready")
