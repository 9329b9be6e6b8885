"""The code location of the distributed tests (tests/test_celery.py, bench/celery_backfill.py):
``Source(key)`` -> ``Result(key)`` with parts, as in reliability_pipeline (same part counts, tags
and payloads, so test_reliability's ``check_entries`` checks them), plus the name of the worker
that computed each entry. ``dagster dev -f tests/celery_pipeline.py`` loads it, and so does every
celery worker that runs a step (Dagster hands the workers this file's path).

Settings, from the environment (the same in the Dagster processes and in every worker):

* ``MP_DAGSTER_DATABASE_URL``, ``MP_CELERY_SCHEMA``: where the tables are;
* ``DAGSTER_CELERY_BROKER_URL``, ``DAGSTER_CELERY_BACKEND_URL``: the Redis URLs of
  deploy/celery.yaml (the executor's config, as shipped); unset, the location uses Dagster's
  multiprocess executor instead;
* ``MP_CELERY_PARTITIONS_PER_RUN``: ``max_partitions_per_run`` of the backfills;
* ``MP_CELERY_COMPUTE_MS``: milliseconds of CPU ``make`` burns per key;
* ``MP_CELERY_RUNS_ON_WORKERS=1``: the instance's run launcher is dagster-celery's (runs go to
  the workers whole, deploy/celery_run_launcher.yaml), so the runs use the in-process executor;
* ``MP_CELERY_WORKER``: set in each worker's environment; ``make`` records it in the entry;
* ``MP_CELERY_SIGNAL_DIR`` (optional): ``make`` creates ``computing-<worker>-<key>`` there.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dagster as dg  # noqa: E402
from reliability_pipeline import n_parts, payload, tag  # noqa: E402

import mp_dagster as mp  # noqa: E402
from mp_dagster.dagster import build_definitions  # noqa: E402

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

CHUNK_KB = 1  # 24..40 parts of 1 KiB a key


def burn_cpu(seconds: float) -> None:
    """Spend ``seconds`` of this process's CPU time (not wall time: other processes share the cores)."""
    deadline = time.process_time() + seconds
    x = 0
    while time.process_time() < deadline:
        for i in range(1000):
            x = (x * 31 + i) % 1_000_003


def declare(schema: mp.Schema, compute_ms: float, signal_dir: str | None = None):
    @schema
    class Source(mp.Manual):
        definition = """
        key : int
        """

    @schema
    class Result(mp.Computed):
        definition = """  # computed by a celery worker
        -> Source
        ---
        n_parts : int
        worker : varchar(64)   # MP_CELERY_WORKER of the process that ran make
        """

        class Chunk(mp.Part):
            definition = """
            -> master
            chunk : smallint
            ---
            tag : text
            data : longblob
            """

        def make(self, key):
            k = key["key"]
            worker = os.environ.get("MP_CELERY_WORKER", f"pid {os.getpid()}")
            if signal_dir:
                Path(signal_dir, f"computing-{worker}-{k}").touch()
            burn_cpu(compute_ms / 1000)
            self.insert1(dict(key, n_parts=n_parts(k), worker=worker))
            self.Chunk.insert(
                dict(key, chunk=c, tag=tag(k, c), data=payload(k, c, CHUNK_KB)) for c in range(n_parts(k))
            )

    return Source, Result


CELERY_YAML = Path(__file__).resolve().parents[1] / "deploy" / "celery.yaml"


def executor() -> dg.ExecutorDefinition | None:
    """dagster-celery's executor configured by deploy/celery.yaml, when its broker is set; the
    in-process executor when whole runs go to the workers (``MP_CELERY_RUNS_ON_WORKERS=1``:
    deploy/celery_run_launcher.yaml is the instance's run launcher)."""
    if os.environ.get("MP_CELERY_RUNS_ON_WORKERS") == "1":
        return dg.in_process_executor
    if not os.environ.get("DAGSTER_CELERY_BROKER_URL"):
        return None
    import yaml
    from dagster_celery import celery_executor

    return celery_executor.configured(yaml.safe_load(CELERY_YAML.read_text())["execution"]["config"],
                                      name="celery")


if "MP_CELERY_SCHEMA" in os.environ:  # loaded as the code location (the tests import declare)
    schema = mp.Schema(os.environ["MP_CELERY_SCHEMA"], database_url=os.environ["MP_DAGSTER_DATABASE_URL"])
    Source, Result = declare(schema, float(os.environ.get("MP_CELERY_COMPUTE_MS", "30")),
                             os.environ.get("MP_CELERY_SIGNAL_DIR") or None)
    defs = build_definitions(
        schema, sensors=False, checks=False,
        max_partitions_per_run=int(os.environ.get("MP_CELERY_PARTITIONS_PER_RUN", "20")),
        executor=executor(),
    )
