"""A PostgreSQL server of a test's own, to restart at will (never the shared test server):
``initdb`` into a temporary directory, ``pg_ctl`` on a free port on 127.0.0.1 with trust
authentication, its socket in the data directory. Run as user ``postgres`` when the test runs
as root (``runuser``; PostgreSQL refuses to run as root). Always stopped (``-m immediate``) and
deleted at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster_dev_util import free_port


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl (Debian keeps them off PATH, per version)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class ThrowawayPostgres:
    def __init__(self, bindir: Path, data: Path, port: int) -> None:
        self.bindir, self.data, self.port = bindir, data, port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def run(self, tool: str, *args: str, timeout: float = 60) -> str:
        """``tool`` (as user postgres when root), its output in ``tools.log`` (a file, not a pipe:
        a server that pg_ctl starts keeps the descriptors it inherits)."""
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        log = self.data / "tools.log"
        with log.open("ab") as out:
            start = out.tell()
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        text = log.read_bytes()[start:].decode(errors="replace")
        assert done.returncode == 0, f"{tool} {args} failed ({done.returncode}):\n{text}\n{self.log()}"
        return text

    def pg_ctl(self, *args: str) -> str:
        """pg_ctl on the data directory, waiting (30 s at most); the server logs to server.log."""
        return self.run("pg_ctl", "-D", str(self.data / "db"), "-l", str(self.data / "server.log"),
                        "-w", "-t", "30", *args)

    def start(self) -> None:
        self.pg_ctl("-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data}",
                    "start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended, open transactions roll back; returns
        once the server accepts connections again (same options: postmaster.opts)."""
        self.pg_ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self.pg_ctl("-m", "immediate", "stop")

    def log(self) -> str:
        try:
            return (self.data / "server.log").read_text(errors="replace")[-3000:]
        except OSError as exc:
            return f"(no server log: {exc})"


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    bindir = postgres_bin()
    assert bindir is not None, "initdb not found (apt-get install postgresql)"
    data = Path(tempfile.mkdtemp(prefix="mp_dagster_pg_"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    server = ThrowawayPostgres(bindir, data, free_port())
    try:
        server.run("initdb", "-D", str(data / "db"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        server.start()
        try:
            yield server
        finally:
            if (data / "db" / "postmaster.pid").exists():
                server.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
