"""The files in deploy/ work as shipped: the nginx site inside Debian's own nginx.conf, the
systemd units as systemd reads them. Nothing is rendered; each program runs in a mount
namespace of its own (harness.servers.with_private_dirs), so it sees the shipped paths while the
machine's own /etc/nginx, /var/log/nginx, /var/lib/nginx and /opt stay untouched."""

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness import DEPLOY, skip_or_fail
from harness.servers import NGINX_LOG_DIR, NGINX_STATE_DIR, require_program, with_private_dirs

UNITS = sorted(p for p in DEPLOY.iterdir() if p.suffix in {".service", ".timer"})


def package_files(package: str) -> set[str]:
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True)
    return set(listing.stdout.split())


def stock_nginx_conf() -> Path:
    """/etc/nginx/nginx.conf, checked to be the one nginx-common ships (its recorded md5)."""
    conffiles = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Conffiles}", "nginx-common"],
        capture_output=True,
        text=True,
    ).stdout
    shipped = re.search(r"^ /etc/nginx/nginx\.conf (\w+)", conffiles, re.MULTILINE)
    conf = Path("/etc/nginx/nginx.conf")
    if shipped is None or not conf.exists():
        skip_or_fail("Debian's nginx-common is not installed (apt-get install nginx)")
    if hashlib.md5(conf.read_bytes()).hexdigest() != shipped[1]:
        skip_or_fail("/etc/nginx/nginx.conf differs from the one nginx-common ships")
    return conf


def test_the_site_file_passes_nginx_t_inside_debians_own_nginx_conf(tmp_path):
    nginx = require_program("nginx")
    stock_nginx_conf()
    site = (DEPLOY / "nginx.conf").read_text()

    # Every directory the site writes into is one the Debian package makes: nginx creates
    # only the last component of a cache path, and never a log file's directory.
    written = re.findall(r"(?m)^\s*(?:proxy_cache_path|access_log|error_log)\s+(/\S+)", site)
    assert len(written) == 3, written
    made_by_debian = package_files("nginx-common")
    for path in written:
        assert str(Path(path).parent) in made_by_debian, f"{path}: no package makes its directory"

    # /etc/nginx as the package left it, then the steps of docs/deploy.md: the site copied
    # as it is, linked into sites-enabled, Debian's default site disabled.
    etc = tmp_path / "etc-nginx"
    shutil.copytree("/etc/nginx", etc, symlinks=True)
    shutil.copy(DEPLOY / "nginx.conf", etc / "sites-available" / "booking")
    (etc / "sites-enabled" / "booking").symlink_to("/etc/nginx/sites-available/booking")
    (etc / "sites-enabled" / "default").unlink(missing_ok=True)
    # The log and state directories as a fresh install has them: empty.
    logs, state = tmp_path / "log", tmp_path / "lib"
    logs.mkdir()
    state.mkdir()

    private = {"/etc/nginx": etc, NGINX_LOG_DIR: logs, NGINX_STATE_DIR: state}
    result = subprocess.run(
        with_private_dirs(private, [nginx, "-t"]), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert (state / "booking").is_dir(), "nginx did not make its cache directory"


def verify_units(units: list[Path], tmp_path: Path) -> str:
    """systemd-analyze verify's complaints about the units, "" when it has none.

    It parses every unit as systemd would (unknown sections and keys, values it cannot
    parse), loads the units they name, and checks that each Exec* command is an executable
    file. For that, /opt/booking/.venv/bin holds the venv's real gunicorn and flask here.
    It does not check the User, the EnvironmentFile or the WorkingDirectory: those are
    looked at when the unit starts (docs/deploy.md makes them)."""
    analyze = require_program("systemd-analyze")
    venv_bin = tmp_path / "opt" / "booking" / ".venv" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    for program in ("gunicorn", "flask"):
        (venv_bin / program).unlink(missing_ok=True)
        (venv_bin / program).symlink_to(Path(sys.executable).parent / program)
    command = [analyze, "verify", *map(str, units)]
    result = subprocess.run(
        with_private_dirs({"/opt": tmp_path / "opt"}, command),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (result.stdout + result.stderr).strip()


def test_every_systemd_unit_verifies_clean(tmp_path):
    assert {u.name for u in UNITS} >= {"booking.service", "booking-purge.timer"}
    assert verify_units(UNITS, tmp_path) == ""


def test_verify_sees_a_mistake_in_a_unit(tmp_path):
    """The check above can fail: a misspelt value and an unknown key are reported."""
    broken = tmp_path / "units" / "booking.service"
    broken.parent.mkdir()
    unit = (DEPLOY / "booking.service").read_text().replace("KillMode=mixed", "KillMode=mixd")
    broken.write_text(unit.replace("[Install]", "Restartt=always\n[Install]"))
    complaints = verify_units([broken], tmp_path)
    assert "kill mode" in complaints
    assert "Unknown key 'Restartt'" in complaints
