"""A real, throwaway PostgreSQL server for the test suite.

``postgres_server(workdir)`` runs ``initdb`` into a fresh data directory, starts the server on a
free TCP port on 127.0.0.1 (its unix socket inside the work directory, fsync off), creates the
database ``optuna`` and yields its SQLAlchemy URL; on exit the server is stopped.

PostgreSQL is a system package, not a Python one: ``bash scripts/ensure-postgres.sh`` (which
``make test`` runs) installs Debian's ``postgresql`` when it is missing. A missing binary is an
error here, never a skip.

PostgreSQL refuses to run as root. When the tests run as root, every PostgreSQL binary is run as
the ``postgres`` user (created as a system user when missing) through ``runuser``, and the work
directory is given to that user. That user must be able to reach the directory, so when one of
its parents is closed to others (pytest's ``/tmp/pytest-of-root`` is mode 700) a fresh directory
directly under the system temporary directory is used instead, and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["postgres_server"]

ENSURE_HINT = "run `bash scripts/ensure-postgres.sh` (it installs Debian's `postgresql` package)"
PG_USER = "postgres"  # the system account the server runs as when the tests run as root
DB_USER = "optuna"
DB_NAME = "optuna"
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: "15" -> (15,), "9.6" -> (9, 6)
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (-1,)


def _debian_bin_dirs() -> list[Path]:
    dirs = [d for d in DEBIAN_PG_ROOT.glob("*/bin") if d.is_dir()]
    return sorted(dirs, key=_version_key, reverse=True)  # newest version first


def _find_binary(name: str, prefer_dir: Path | None = None) -> Path:
    """``prefer_dir`` (the directory of initdb) first, so all binaries come from one version."""
    candidates: list[Path] = []
    if prefer_dir is not None:
        candidates.append(prefer_dir / name)
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    candidates.extend(d / name for d in _debian_bin_dirs())
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise RuntimeError(
        f"PostgreSQL binary {name!r} not found on PATH or in {DEBIAN_PG_ROOT}/*/bin; {ENSURE_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", name], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"PostgreSQL refuses to run as root and user {name!r} does not exist; "
            f"`useradd --system --no-create-home {name}` failed (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()}"
        )
    return pwd.getpwnam(name)


def _reachable_by_others(path: Path) -> bool:
    """Whether every existing ancestor of ``path`` can be traversed by any user (o+x)."""
    for p in path.resolve().parents:
        if not os.stat(p).st_mode & 0o001:
            return False
    return True


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``pid`` has exited (a zombie waiting for init to reap it counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return
        time.sleep(0.05)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.chown(os.path.join(root, n), uid, gid, follow_symlinks=False)


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """Start a throwaway PostgreSQL server; yield ``postgresql+psycopg2://optuna@127.0.0.1:<port>/optuna``."""
    initdb = _find_binary("initdb")
    bin_dir = initdb.resolve().parent
    pg_ctl = _find_binary("pg_ctl", bin_dir)
    createdb = _find_binary("createdb", bin_dir)

    as_root = os.geteuid() == 0
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    own_tmp: Path | None = None
    workdir = Path(workdir)
    if as_root:
        owner = _ensure_system_user(PG_USER)
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        if not os.access(runuser, os.X_OK):
            raise RuntimeError("running as root needs `runuser` (util-linux) to start PostgreSQL as 'postgres'")
        prefix = [runuser, "-u", PG_USER, "--"]
        workdir.mkdir(parents=True, exist_ok=True)
        if not _reachable_by_others(workdir):
            own_tmp = Path(tempfile.mkdtemp(prefix="nni-udc-pg-", dir=tempfile.gettempdir()))
            if not _reachable_by_others(own_tmp):
                own_tmp = Path(tempfile.mkdtemp(prefix="nni-udc-pg-", dir="/tmp"))
            workdir = own_tmp
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    pgdata = workdir / "pgdata"
    sockdir = workdir / "sock"
    logfile = workdir / "server.log"
    sockdir.mkdir(exist_ok=True)
    if owner is not None:
        _chown_tree(workdir, owner.pw_uid, owner.pw_gid)

    def run(args: list[str | Path], what: str) -> subprocess.CompletedProcess[str]:
        cmd = prefix + [str(a) for a in args]
        # cwd=workdir: the postgres user may not be allowed into the caller's working directory.
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            log = logfile.read_text(errors="replace")[-4000:] if logfile.exists() else "(no server log)"
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
                f"--- stdout ---\n{proc.stdout.strip()}\n--- stderr ---\n{proc.stderr.strip()}\n"
                f"--- server log {logfile} ---\n{log.strip()}"
            )
        return proc

    try:
        run([initdb, "-D", pgdata, "-U", DB_USER, "--auth=trust", "--encoding=UTF8", "--no-locale",
             "--no-sync"], "initdb")
        started = False
        try:
            for attempt in range(3):  # the port may be taken between choosing it and binding it
                port = _free_port()
                opts = (f"-k {shlex.quote(str(sockdir))} -p {port} "
                        f"-c listen_addresses=127.0.0.1 -c fsync=off")
                try:
                    run([pg_ctl, "-D", pgdata, "-l", logfile, "-w", "-o", opts, "start"], "pg_ctl start")
                    started = True
                    break
                except RuntimeError:
                    # Stop whatever may have come up, then retry on another port.
                    subprocess.run(prefix + [str(pg_ctl), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                                   cwd=workdir, capture_output=True, stdin=subprocess.DEVNULL)
                    if attempt == 2:
                        raise
            run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, DB_NAME], "createdb")
            yield f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{port}/{DB_NAME}"
        finally:
            if started:
                pid = _postmaster_pid(pgdata)
                run([pg_ctl, "-D", pgdata, "-m", "immediate", "-w", "stop"], "pg_ctl stop")
                if pid is not None:
                    _wait_gone(pid)
    finally:
        if own_tmp is not None:
            shutil.rmtree(own_tmp, ignore_errors=True)
