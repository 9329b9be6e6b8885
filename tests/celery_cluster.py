"""A real distributed Dagster for the tests of tests/test_celery.py (and bench/celery_backfill.py):
its own redis-server on 127.0.0.1, dagster-celery workers, dagster-webserver and dagster-daemon
on a Dagster instance on PostgreSQL (deploy/dagster.yaml), all loading tests/celery_pipeline.py.

Every process runs in its own process group and is stopped with ``dagster_dev_util.stop_group``
(SIGINT, then SIGKILL); every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_dev_util import deploy_instance, free_port, log_tail, stop_group, wait_ready

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PIPELINE = HERE / "celery_pipeline.py"
CELERY_YAML = REPO / "deploy" / "celery.yaml"
RUN_LAUNCHER_YAML = REPO / "deploy" / "celery_run_launcher.yaml"
BIN = Path(sys.executable).parent
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("MP_DAGSTER_REQUIRE_POSTGRES") == "1"
READY_TIMEOUT = 60.0


def require_celery() -> None:
    """dagster-celery and redis-server are there; else skip, or FAIL in CI (CI=true or
    MP_DAGSTER_REQUIRE_POSTGRES=1): a distributed test must never vanish silently."""
    missing = []
    try:
        import dagster_celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        missing.append(f"{exc} (pip install -e '.[celery]')")
    if not shutil.which("redis-server"):
        missing.append("redis-server not on PATH (apt-get install redis-server)")
    if missing:
        message = "the celery tests need " + "; ".join(missing)
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``args`` in a process group of its own, output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def start_redis(port: int, log: Path) -> subprocess.Popen:
    """A throwaway redis-server on 127.0.0.1:``port``, nothing persisted; waits for PONG."""
    proc = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no"], dict(os.environ), log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"redis-server exited:\n{log_tail(log)}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"redis-server not up after 20 s:\n{log_tail(log)}")


def celery_run_launcher() -> dict:
    """deploy/celery_run_launcher.yaml's instance section: whole runs go to the celery workers
    (the code location must then use the in-process executor: ``MP_CELERY_RUNS_ON_WORKERS=1``)."""
    return yaml.safe_load(RUN_LAUNCHER_YAML.read_text())


def patch_instance(home: Path, **sections) -> None:
    """Merge ``sections`` into ``home``'s dagster.yaml (one level deep)."""
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


class Cluster:
    """The processes of one distributed Dagster; ``env`` is the environment they share."""

    def __init__(self, tmp: Path, env: dict[str, str], stack: ExitStack) -> None:
        self.tmp, self.env, self.stack = tmp, env, stack
        self.procs: dict[str, subprocess.Popen] = {}
        self.port: int | None = None

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = spawn(args, env or self.env, self.log(name))
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> str:
        proc = self.procs.pop(name)
        return stop_group(proc)

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            print(f"{name} stopped: {self.stop(name)}")

    def worker(self, name: str, concurrency: int = 1) -> subprocess.Popen:
        """``dagster-celery worker start`` with deploy/celery.yaml, named ``name`` (celery node
        ``name@host``), ``concurrency`` processes, ``MP_CELERY_WORKER=name`` in its environment.
        Its process group holds the whole worker: the dagster-celery command, celery's main
        process and its pool."""
        env = {**self.env, "MP_CELERY_WORKER": name, "PATH": f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"}
        return self.start(name, [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                                 "-y", str(CELERY_YAML), "-n", name, "--", f"--concurrency={concurrency}"], env)

    def wait_workers(self, *names: str, timeout: float = READY_TIMEOUT) -> None:
        """Until each worker logs celery's ``ready.``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [n for n in names if "ready." not in self.log(n).read_text(errors="replace")]
            if not pending:
                return
            for n in pending:
                assert self.procs[n].poll() is None, f"worker {n} exited:\n{log_tail(self.log(n))}"
            time.sleep(0.2)
        raise AssertionError(f"workers {pending} not ready after {timeout} s:\n"
                             + "\n".join(log_tail(self.log(n)) for n in pending))

    def webserver(self) -> None:
        self.port = free_port()
        proc = self.start("webserver", [str(BIN / "dagster-webserver"), "-f", str(PIPELINE),
                                        "-h", "127.0.0.1", "-p", str(self.port)])
        wait_ready(proc, self.port, self.log("webserver"))

    def daemon(self) -> None:
        self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-f", str(PIPELINE)])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert not body.get("errors"), body
        return body["data"]

    def launch_backfill(self, asset_key: dg.AssetKey, partitions: list[str],
                        tags: dict[str, str] | None = None) -> str:
        """``launchPartitionBackfill`` as the UI's "Launch backfill" sends it: the asset, its
        partitions, the tags typed in the dialog. Returns the backfill id."""
        data = self.graphql(LAUNCH_BACKFILL, {"backfillParams": {
            "assetSelection": [{"path": list(asset_key.path)}],
            "partitionNames": partitions,
            "fromFailure": False,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }})["launchPartitionBackfill"]
        assert data.get("__typename") == "LaunchBackfillSuccess", data
        return data["backfillId"]

    def start_backfill(self, asset_key: dg.AssetKey, partitions: list[str], workers: tuple[str, ...] = ("w1", "w2"),
                       tags: dict[str, str] | None = None) -> str:
        """Start the celery ``workers``, the webserver, launch the backfill through it, then start
        the daemon once the workers are ready: its first backfill iteration (the daemon's
        backfill loop sleeps 30 s between iterations) turns the backfill into runs."""
        for name in workers:
            self.worker(name)
        self.webserver()
        backfill_id = self.launch_backfill(asset_key, partitions, tags)
        self.wait_workers(*workers)
        self.daemon()
        return backfill_id

    def reexecute(self, run_id: str, strategy: str = "FROM_FAILURE") -> str:
        """The run page's "Re-execute from failure" (``launchRunReexecution``); the new run's id."""
        data = self.graphql(REEXECUTE, {"reexecutionParams": {"parentRunId": run_id, "strategy": strategy}})
        data = data["launchRunReexecution"]
        assert data.get("__typename") == "LaunchRunSuccess", data
        return data["run"]["runId"]

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{log_tail(self.log(n), 40)}" for n in self.procs)


# the mutation of the UI's "Launch backfill" (dagster-webserver 1.13's LaunchPartitionBackfill)
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}
"""

REEXECUTE = """
mutation LaunchPipelineReexecution($reexecutionParams: ReexecutionParams) {
  launchRunReexecution(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
  }
}
"""


@contextmanager
def cluster(tmp: Path, pg_url: str, tables_url: str, schema: str, instance: dict | None = None,
            **settings: str) -> Iterator[Cluster]:
    """A Dagster instance on ``pg_url`` (deploy/dagster.yaml in a database of its own, with
    ``instance``'s sections merged in), a redis-server, and the environment of the code location
    (``settings``: more ``MP_CELERY_*`` variables); yields the :class:`Cluster` that starts the
    processes, and stops every one of them at the end."""
    home = tmp / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MP_DAGSTER_DATABASE_URL": tables_url,
           "MP_CELERY_SCHEMA": schema, **settings}
    with ExitStack() as stack:
        stack.enter_context(deploy_instance(home, env, pg_url))
        patch_instance(home, **(instance or {}))
        redis_port = free_port()
        env["DAGSTER_CELERY_BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        env["DAGSTER_CELERY_BACKEND_URL"] = f"redis://127.0.0.1:{redis_port}/1"
        c = Cluster(tmp, env, stack)
        try:
            c.procs["redis"] = start_redis(redis_port, c.log("redis"))
            yield c
        finally:
            c.stop_all()
