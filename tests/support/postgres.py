"""A throwaway PostgreSQL server for tests and benchmarks (trust auth, fsync off, 127.0.0.1 only).

The binaries are looked up in ``/usr/lib/postgresql/*/bin``, then on PATH; :class:`PostgresUnavailable`
says what is missing so callers can skip with that reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _pg_bindir() -> Path | None:
    def version(d: str) -> float:
        try:
            return float(Path(d).parent.name)
        except ValueError:
            return 0.0

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).resolve().parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or no user to run them as."""


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL server; yields its URL and removes it afterwards."""
    bindir = _pg_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on "
                                  "PATH; install with: apt-get update && apt-get install -y postgresql")
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                owner = pwd.getpwnam(name)
                break
        if runuser is None or owner is None:
            raise PostgresUnavailable("running as root without runuser or a postgres/nobody user to run PostgreSQL as")
        prefix = [runuser, "-u", owner.pw_name, "--"]
    tmp = Path(tempfile.mkdtemp(prefix="cr-pg-"))  # under /tmp, not pytest's root-only 0700 dir
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    data, port = tmp / "data", free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*prefix, *cmd], cwd=tmp, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = (tmp / "log").read_text() if (tmp / "log").exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-locale", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "-t", "30", "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -F -c full_page_writes=off", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)
