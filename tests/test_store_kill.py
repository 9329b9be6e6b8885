"""Kill trials with store attributes: a worker writing master-part entries whose parts keep
arrays in a store (``<npy@kill>``, ``<blob@kill>``) is SIGKILLed at random moments (starting,
in ``make`` while it writes objects, between ``make`` and the commit, anywhere). After each
trial: no committed row references a missing or damaged object, every entry is whole, gc
(grace 0) collects the orphans and removes no object of a live row. Real processes, real
PostgreSQL and SQLite, a real directory and moto's S3 server.

``MP_STORE_KILL_TRIALS`` (default 30) sets the trials on PostgreSQL with a file store; SQLite
and S3 run a third of them each. Figures are printed (``pytest -s``) and kept in the test's
``user_properties``, as in tests/test_reliability.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import unique_schema_name
from store_kill_pipeline import declare, n_parts, payload
from store_servers import S3_ENV, create_bucket, moto_server

import mp_dagster as mp
from mp_dagster.stores import get_store

HERE = Path(__file__).parent
WORKER = HERE / "store_kill_worker.py"
TRIALS = int(os.environ.get("MP_STORE_KILL_TRIALS", "30"))
SEED = int(os.environ.get("MP_RELIABILITY_SEED", "20261202"))
KEYS = 8
TRIAL_TIMEOUT_S = 30.0


def spawn(url: str, schema: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), url, schema, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def phase_of(signal_dir: Path) -> str:
    computing = {p.name.split("-", 1)[1] for p in signal_dir.glob("computing-*")}
    computed = {p.name.split("-", 1)[1] for p in signal_dir.glob("computed-*")}
    if not computing:
        return "startup"
    return "make_writing_objects" if computing - computed else "between_make_and_commit"


def kill_at(proc: subprocess.Popen, strategy: str, signal_dir: Path, rng: random.Random) -> str:
    deadline = time.monotonic() + TRIAL_TIMEOUT_S

    def wait(predicate) -> None:
        while time.monotonic() < deadline and proc.poll() is None and not predicate():
            time.sleep(0.001)

    if strategy == "random":
        until = time.monotonic() + rng.uniform(0.2, 1.2)
        wait(lambda: time.monotonic() >= until)
    elif strategy == "make":  # while make writes its objects
        wait(lambda: phase_of(signal_dir) == "make_writing_objects")
        time.sleep(rng.uniform(0, 0.08))
    else:  # "commit": make returned, the entry's transaction is about to run
        wait(lambda: phase_of(signal_dir) == "between_make_and_commit")
        time.sleep(rng.uniform(0, 0.01))
    if proc.poll() is not None:
        return "finished"
    phase = phase_of(signal_dir)
    os.kill(proc.pid, signal.SIGKILL)
    return phase


def check(result_cls) -> dict:
    """Committed rows whose objects are missing or damaged, and entries that are not whole."""
    dangling = partial = rows = 0
    masters = {m["key"]: m for m in result_cls.fetch(as_dict=True)}
    chunks: dict[int, list[dict]] = {}
    for row in result_cls.Chunk.fetch("key", "chunk", "data", as_dict=True, order_by=("key", "chunk")):
        chunks.setdefault(row["key"], []).append(row)
    for k, master in masters.items():
        rows += 1
        try:
            ok = master["summary"] == {"key": k, "parts": n_parts(k)}
        except mp.MPError:
            dangling += 1
            continue
        got = chunks.get(k, [])
        ok = ok and [c["chunk"] for c in got] == list(range(n_parts(k)))
        for c in got:
            rows += 1
            try:
                if not np.array_equal(c["data"].load(mmap=False), payload(k, c["chunk"])):
                    ok = False
            except mp.MPError:
                dangling += 1
        partial += not ok
    try:
        metas = result_cls.Chunk.fetch("meta")  # every blob verified against its hash
    except mp.MPError:
        dangling += 1
        metas = []
    orphans = len(result_cls.Chunk - result_cls)
    return {"rows": rows, "dangling": dangling, "partial": partial, "orphan_parts": orphans, "metas": len(metas)}


def kill_trials(url: str, tmp_path: Path, n: int, request) -> dict:
    schema = mp.Schema(unique_schema_name("skill"), database_url=url)
    store = get_store("kill")
    try:
        Source, Result = declare(schema)
        Source.insert([{"key": k} for k in range(KEYS)])
        rng = random.Random(SEED)
        phases: Counter = Counter()
        figures = {"backend": schema.backend.name, "store": store.protocol, "trials": 0, "kills": 0,
                   "finished_before_kill": 0, "rows_checked": 0, "rows_referencing_missing_objects": 0,
                   "partial_entries": 0, "orphans_collected": 0, "orphan_bytes_collected": 0,
                   "live_objects_removed": 0, "entries_committed": 0}
        started = time.monotonic()
        for trial in range(n):
            signal_dir = tmp_path / f"trial{trial}"
            signal_dir.mkdir()
            proc = spawn(url, schema.name, "--signal-dir", str(signal_dir), "--seed", str(rng.randrange(10**6)))
            try:
                phase = kill_at(proc, ("random", "make", "commit")[trial % 3], signal_dir, rng)
            finally:
                if proc.poll() is None:
                    proc.kill()
                _, err = proc.communicate(timeout=60)
            figures["trials"] += 1
            if phase == "finished" or proc.returncode == 0:
                assert proc.returncode == 0, err[-3000:]
                figures["finished_before_kill"] += 1
            else:
                assert proc.returncode == -signal.SIGKILL, err[-3000:]
                figures["kills"] += 1
                phases[phase] += 1
            found = check(Result)
            figures["rows_checked"] += found["rows"]
            figures["rows_referencing_missing_objects"] += found["dangling"]
            figures["partial_entries"] += found["partial"] + found["orphan_parts"]
            figures["entries_committed"] += len(Result())
            report = schema.gc("kill", grace=timedelta(0), dry_run=False)["kill"]
            assert report.missing == [], report.missing
            figures["orphans_collected"] += len(report.deleted)
            figures["orphan_bytes_collected"] += report.unreferenced_bytes
            after = check(Result)  # gc removed no object a committed row references
            figures["live_objects_removed"] += after["dangling"]
            if len(Result()):  # (after gc ran beside them) pending again; their objects: garbage
                Result.delete(prompt=False)
        proc = spawn(url, schema.name)  # undisturbed, a worker completes every key
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        found = check(Result)
        assert len(Result()) == KEYS and found["dangling"] == 0 and found["partial"] == 0
        report = schema.gc("kill", grace=timedelta(0), dry_run=False)["kill"]
        figures["orphans_collected"] += len(report.deleted)
        live = {o.address for o in store.list()}
        assert report.referenced == len(live) and check(Result)["dangling"] == 0
        assert not list(store.list(".tmp", include_temp=True))  # no stale partial write left
        figures["kills_by_phase"] = dict(sorted(phases.items()))
        figures["seconds"] = round(time.monotonic() - started, 1)
        json.dumps(figures)
        request.node.user_properties.append(("store_kill", figures))
        print(f"\n[store_kill] {json.dumps(figures, sort_keys=True)}")
        return figures
    finally:
        schema.drop(force=True)


def assert_clean(figures: dict, n: int) -> None:
    assert figures["rows_referencing_missing_objects"] == 0, figures
    assert figures["live_objects_removed"] == 0, figures
    assert figures["partial_entries"] == 0, figures
    assert figures["kills"] >= n * 0.5, figures


def test_kill_trials_postgres_file_store(pg_url, tmp_path, monkeypatch, request):
    monkeypatch.setenv("MP_DAGSTER_STORE_KILL", (tmp_path / "store").as_uri())
    figures = kill_trials(pg_url, tmp_path, TRIALS, request)
    assert_clean(figures, TRIALS)
    assert figures["orphans_collected"] > 0, figures  # kills mid-make really left objects behind
    if TRIALS >= 9:
        assert {"make_writing_objects", "between_make_and_commit"} <= set(figures["kills_by_phase"]), figures


def test_kill_trials_sqlite_file_store(tmp_path, monkeypatch, request):
    monkeypatch.setenv("MP_DAGSTER_STORE_KILL", (tmp_path / "store").as_uri())
    n = max(3, TRIALS // 3)
    figures = kill_trials(f"sqlite:///{tmp_path / 'kill.db'}", tmp_path, n, request)
    assert_clean(figures, n)


def test_kill_trials_postgres_s3_store(pg_url, tmp_path, monkeypatch, request):
    with moto_server(tmp_path / "moto.log") as endpoint:
        for key, value in S3_ENV.items():
            monkeypatch.setenv(key, value)
        bucket = f"kill-{uuid.uuid4().hex[:12]}"
        create_bucket(endpoint, bucket)
        monkeypatch.setenv("MP_DAGSTER_STORE_KILL", f"s3://{bucket}/trials")
        monkeypatch.setenv("MP_DAGSTER_STORE_KILL_ENDPOINT_URL", endpoint)
        n = max(3, TRIALS // 3)
        figures = kill_trials(pg_url, tmp_path, n, request)
        assert_clean(figures, n)


pytestmark = pytest.mark.timeout(900)
