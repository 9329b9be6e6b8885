"""Real object stores for tests/test_stores.py: moto's standalone S3 server on 127.0.0.1.

moto (``pip install 'moto[server]'``, in the ``dev`` extra) is the S3-compatible server
installable here. It runs as a subprocess in a process group of its own on a free port; every
wait is bounded, and it is stopped (SIGTERM, then SIGKILL) at teardown. When moto is missing the
S3 cases skip locally, and FAIL in CI (CI=true or MP_DAGSTER_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRED = os.environ.get("CI") == "true" or os.environ.get("MP_DAGSTER_REQUIRE_POSTGRES") == "1"
READY_TIMEOUT = 30.0  # seconds for moto to answer
STOP_TIMEOUT = 10.0  # seconds for moto to exit on SIGTERM

# what the S3 client needs to talk to moto (moto accepts any credentials)
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}


def require_moto() -> None:
    """moto's server and s3fs are installed; else skip, or FAIL in CI."""
    missing = [f"{module} (pip install -e '.[dev]')" for module in ("moto", "flask", "s3fs")
               if importlib.util.find_spec(module) is None]
    if missing:
        message = "the S3 store tests need " + ", ".join(missing)
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/reset", data=b"", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """A running moto server; yields its endpoint URL (``http://127.0.0.1:PORT``)."""
    require_moto()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start on {endpoint}: "
                                   + log.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        yield endpoint
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Stop a process group started with start_new_session: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on the S3 server at ``endpoint`` (through s3fs, as the store talks)."""
    import s3fs

    fs = s3fs.S3FileSystem(key=S3_ENV["AWS_ACCESS_KEY_ID"], secret=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir(bucket)  # no region: a LocationConstraint of us-east-1 is refused
