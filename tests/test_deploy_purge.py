"""deploy/booking-purge.service and .timer: valid units, and the command they run deletes
the expired idempotency keys and only those."""

import os
import shlex
import shutil
import subprocess
import uuid

from harness import DEPLOY, ROOT, skip_or_fail


def unit(name: str) -> str:
    """The shipped unit with the install directory pointed at this checkout."""
    return (DEPLOY / name).read_text().replace("/opt/booking", str(ROOT))


def setting(text: str, name: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name}=")]
    return line.partition("=")[2]


def test_the_units_are_valid_systemd_units(tmp_path):
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze is not installed (apt-get install systemd)")
    for name in ("booking-purge.service", "booking-purge.timer"):
        (tmp_path / name).write_text(unit(name))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "booking-purge.timer")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    timer = unit("booking-purge.timer")
    assert setting(timer, "Unit") == "booking-purge.service"
    assert setting(timer, "OnCalendar") == "hourly"


def test_the_service_purges_expired_keys_only(database_url, sql):
    prefix = f"purge-{uuid.uuid4().hex}"
    sql(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)"
        " SELECT %s || '-old-' || n, 'f', 404, '{}', now() - interval '25 hours'"
        " FROM generate_series(1, 2500) n",
        (prefix,),
    )
    sql(
        "INSERT INTO idempotency_keys (key, fingerprint, status, body) VALUES (%s, 'f', 404, '{}')",
        (f"{prefix}-fresh",),
    )
    command = shlex.split(setting(unit("booking-purge.service"), "ExecStart"))
    env = {**os.environ, "DATABASE_URL": database_url, "IDEMPOTENCY_TTL_SECONDS": "86400"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    purged = int(done.stdout.split()[1])  # "purged N expired idempotency keys"
    assert purged >= 2500
    kept = sql("SELECT key FROM idempotency_keys WHERE key LIKE %s", (f"{prefix}%",))
    assert kept == [(f"{prefix}-fresh",)]
