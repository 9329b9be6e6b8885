"""The demo project: ``dagster dev -w workspace.yaml`` loads ``defs`` from here.

Tables live in ``mp_dagster/demo.py`` (the seeds' Image -> Segmentation(ROI) and
Recording -> ArrayResponse(ElectrodeResponse, ChannelResponse)). The database is
``MP_DAGSTER_DATABASE_URL``; without it, an SQLite file next to this one.
"""

import os
from pathlib import Path

os.environ.setdefault("MP_DAGSTER_DATABASE_URL", f"sqlite:///{Path(__file__).resolve().parent / 'mp_dagster_demo.db'}")

from mp_dagster import demo  # noqa: E402  (the URL above must be set first)
from mp_dagster.dagster import build_definitions  # noqa: E402

KEYS_PER_RUN = os.environ.get("MP_DAGSTER_KEYS_PER_RUN", "auto")
defs = build_definitions(
    demo.imaging,
    demo.ephys,
    sensor_interval_seconds=int(os.environ.get("MP_DAGSTER_SENSOR_INTERVAL", "5")),
    # new images grouped into about as many runs as run at once ("auto"); MP_DAGSTER_KEYS_PER_RUN=1
    # for one run per image: each run is a process of its own (bench/sensor_runs.py measures both)
    keys_per_run=KEYS_PER_RUN if KEYS_PER_RUN == "auto" else int(KEYS_PER_RUN),
    # scheduled partitions: every hour, request whatever ArrayResponse keys are still pending
    schedules={demo.ArrayResponse: "0 * * * *"},
)
