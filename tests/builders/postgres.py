"""A throw-away PostgreSQL server for tests: initdb in a temporary folder, started on a free
localhost port, stopped and removed at the end.

PostgreSQL refuses to run as root (`initdb: cannot be run as root`), so as root the server
runs as the `postgres` system user (through `runuser`), in a folder that user owns outside
/root. As any other user it runs as that user. Authentication is `trust` on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """PostgreSQL is not installed here, or would not start; the message says which."""


def postgres_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if not candidates:
        raise ServerUnavailable(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    folder: Path
    port: int
    user: str  # the system user the server runs as; also the database superuser

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ServerUnavailable(f"{' '.join(args[:2])} failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")
        return done

    @classmethod
    def start(cls) -> "PostgresServer":
        user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        try:
            owner = pwd.getpwnam(user)
        except KeyError:
            raise ServerUnavailable(f"there is no {user!r} system user to run PostgreSQL as") from None
        # /tmp, not pytest's tmp_path: the server's user must be able to reach the folder
        folder = Path(tempfile.mkdtemp(prefix="edgegolf-pg-", dir="/tmp"))
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        server = cls(folder, _free_port(), user)
        try:
            server._run(postgres_bin("initdb"), "-D", str(folder / "data"), "-U", user, "-A", "trust", "--no-sync",
                        "-E", "UTF8")
            options = f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
            server._run(postgres_bin("pg_ctl"), "-D", str(folder / "data"), "-o", options, "-l", str(folder / "log"),
                        "-w", "-t", "60", "start")
        except (ServerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
            log = folder / "log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
            raise ServerUnavailable(f"{exc} {tail}".strip()) from None
        return server

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL (psycopg2 driver)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(postgres_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop", timeout=60)
        except (ServerUnavailable, subprocess.TimeoutExpired):
            pass  # stopped already; the folder goes either way
        shutil.rmtree(self.folder, ignore_errors=True)
