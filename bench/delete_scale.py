"""Deleting 10% of a pipeline of about a million part rows, with the preview, against a
hand-written SQL delete of the same rows in one transaction (issue 13: target <= 3x).

Usage::

    .venv/bin/python bench/delete_scale.py [--url URL] [--images 10000] [--rois 100] [--reps 3]

The pipeline (declared by mp_dagster, filled with binary ``COPY``) is the seeds' shape plus what
makes cascades hard::

    Kind (lookup, 8 rows)          referenced by every ROI
    Image (image_id; image blob)   10,000 rows
    Segmentation (-> Image)        10,000 entries, with parts
      .ROI  (-> master; roi; --- -> Kind; roi_pixels, roi_weights blobs)      1,000,000 rows
      .Contact (-> master.ROI; -> Segmentation.ROI.proj(neighbor='roi'))      100,000 rows
                                   (a part referencing a part, twice, once renamed)
    Feature (-> Segmentation)      10,000 rows downstream

Each repetition deletes another tenth of the images (``image_id % 10 == s``; the slices have the
same shape): mp_dagster with ``delete_preview()`` then ``delete(prompt=False)``, and the hand
SQL (five ``DELETE ... WHERE image_id = ANY(%s)``, leaves first, one transaction) on
alternating slices. Blobs are small (8 elements): a delete never reads them, and both sides
delete the same rows.

Server memory: (1) a thread samples the PostgreSQL backend's private memory (``RssAnon`` in
``/proc/<pid>/status``; the server runs on this machine) every 5 ms while mp_dagster previews
and deletes; (2) one more slice is deleted with every statement of the plan (the key-set
inserts, the part-rule checks, the deletes) run as ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``
(that runs it; a ``SELECT`` then runs again for its rows): the largest memory any plan node
reports (hash tables, sorts) and whether any spilled to disk, against ``work_mem``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
import uuid
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

import mp_dagster as mp
from mp_dagster import blob

DEFAULT_URL = os.environ.get("MP_DAGSTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def declare(schema: mp.Schema) -> dict[str, Any]:
    @schema
    class Kind(mp.Lookup):
        definition = """
        kind_id : smallint
        ---
        label : varchar(16)
        """
        contents = [(k, f"kind{k}") for k in range(8)]

    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        image : blob
        """

    @schema
    class Segmentation(mp.Computed):
        definition = """
        -> Image
        ---
        n_rois : int
        """

        class ROI(mp.Part):
            definition = """
            -> master
            roi : smallint
            ---
            -> Kind
            roi_pixels : blob
            roi_weights : blob
            """

        class Contact(mp.Part):
            definition = """
            -> master.ROI
            -> Segmentation.ROI.proj(neighbor='roi')
            ---
            strength : float64
            """

        def make(self, key: dict[str, Any]) -> None:  # the rows come by COPY
            raise NotImplementedError

    @schema
    class Feature(mp.Computed):
        definition = """
        -> Segmentation
        ---
        total : float64
        """

        def make(self, key: dict[str, Any]) -> None:
            raise NotImplementedError

    return {"Kind": Kind, "Image": Image, "Segmentation": Segmentation, "Feature": Feature}


def fill(conn: psycopg.Connection, schema: str, images: int, rois: int) -> dict[str, int]:
    """COPY the rows in (binary); returns rows per table."""
    small = blob.pack(np.arange(8, dtype=np.float64))
    pixels = blob.pack(np.arange(8, dtype=np.int64))
    counts: dict[str, int] = {}

    def copy(table: str, columns: list[str], types: list[str], rows: Any) -> None:
        n = 0
        with conn.cursor() as cur:
            stmt = sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
            with cur.copy(stmt) as cp:
                cp.set_types(types)
                for row in rows:
                    cp.write_row(row)
                    n += 1
        counts[table] = n

    copy("image", ["image_id", "image"], ["int4", "bytea"], ((i, small) for i in range(images)))
    copy("segmentation", ["image_id", "n_rois"], ["int4", "int4"], ((i, rois) for i in range(images)))
    copy("segmentation__roi", ["image_id", "roi", "kind_id", "roi_pixels", "roi_weights"],
         ["int4", "int2", "int2", "bytea", "bytea"],
         ((i, r, r % 8, pixels, small) for i in range(images) for r in range(rois)))
    copy("segmentation__contact", ["image_id", "roi", "neighbor", "strength"], ["int4", "int2", "int2", "float8"],
         ((i, r, (r + 1) % rois, 0.5) for i in range(images) for r in range(0, rois, 10)))
    copy("feature", ["image_id", "total"], ["int4", "float8"], ((i, 1.0) for i in range(images)))
    conn.commit()
    return counts


class RssSampler:
    """Peak private memory (RssAnon, kB) of one PostgreSQL backend, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.path = f"/proc/{pid}/status"
        self.peak_kb = 0
        self.base_kb = self.read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> int:
        try:
            with open(self.path) as f:
                m = re.search(r"^RssAnon:\s+(\d+) kB", f.read(), re.M)
        except OSError:
            return -1
        return int(m.group(1)) if m else -1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.read())
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(plan_nodes(child))
    return out


def explain_delete(tables: dict[str, Any], ids: list[int]) -> dict[str, Any]:
    """Delete one slice with every INSERT/DELETE of the plan run under EXPLAIN ANALYZE."""
    backend = tables["Image"].schema.backend
    real = backend.execute
    report: dict[str, Any] = {"statements": 0, "max_node_memory_kb": 0, "spilled": [], "temp_blocks": 0}

    def explained(query: sql.Composable, params: Any = None, binary: bool = False, **kw: Any) -> list[tuple]:
        text = query.as_string(backend.conn)
        if not re.match(r"\s*(INSERT|DELETE|SELECT)\b", text):
            return real(query, params, binary, **kw)
        rows = real(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query, params)
        doc = rows[0][0]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        report["statements"] += 1
        for node in plan_nodes(doc[0]["Plan"]):
            mem = max(node.get("Peak Memory Usage", 0), node.get("Sort Space Used", 0) if
                      node.get("Sort Space Type") == "Memory" else 0)
            report["max_node_memory_kb"] = max(report["max_node_memory_kb"], mem)
            if node.get("Sort Space Type") == "Disk" or node.get("Hash Batches", 1) > 1 or node.get("Disk Usage"):
                report["spilled"].append(node.get("Node Type"))
            report["temp_blocks"] += node.get("Temp Written Blocks", 0)
        # a SELECT's rows are needed: it runs once more for real (EXPLAIN ANALYZE ran it once)
        return real(query, params, binary, **kw) if text.lstrip().startswith("SELECT") else []

    backend.execute = explained  # an instance attribute: this bench only
    try:
        (tables["Image"] & [{"image_id": i} for i in ids]).delete(prompt=False)
    finally:
        del backend.execute
    return report


HAND = [("feature", "image_id"), ("segmentation__contact", "image_id"), ("segmentation__roi", "image_id"),
        ("segmentation", "image_id"), ("image", "image_id")]


def hand_delete(conn: psycopg.Connection, schema: str, ids: list[int]) -> int:
    n = 0
    with conn.transaction():
        for table, col in HAND:
            cur = conn.execute(sql.SQL("DELETE FROM {}.{} WHERE {} = ANY(%s)").format(
                sql.Identifier(schema), sql.Identifier(table), sql.Identifier(col)), (ids,))
            n += cur.rowcount
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--rois", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3, help="slices deleted by each side (at most 4)")
    ap.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    assert 1 <= args.reps <= 4
    name = f"bench_del_{uuid.uuid4().hex[:8]}"
    schema = mp.Schema(name, database_url=args.url)
    tables = declare(schema)
    conn = psycopg.connect(args.url, autocommit=False)
    try:
        t0 = time.perf_counter()
        counts = fill(conn, name, args.images, args.rois)
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE"))
        load_s = time.perf_counter() - t0
        work_mem = conn.execute("SHOW work_mem").fetchone()[0]
        part_rows = counts["segmentation__roi"] + counts["segmentation__contact"]
        print(f"loaded {counts} ({part_rows:,} part rows) in {load_s:.1f} s; work_mem {work_mem}")
        conn.autocommit = False
        backend = schema.backend
        pid = backend.execute(sql.SQL("SELECT pg_backend_pid()"))[0][0]
        Image = tables["Image"]
        results: dict[str, list[float]] = {"preview": [], "delete": [], "mp_total": [], "hand": []}
        peaks: list[int] = []
        order = ["mp", "hand", "hand", "mp", "mp", "hand", "hand", "mp"][: 2 * args.reps]
        for s, who in enumerate(order):
            ids = [i for i in range(args.images) if i % 10 == s]
            with psycopg.connect(args.url, autocommit=True) as c:
                c.execute("CHECKPOINT")
            if who == "mp":
                rel = Image & [{"image_id": i} for i in ids]
                with RssSampler(pid) as rss:
                    t = time.perf_counter()
                    preview = rel.delete_preview()
                    t_preview = time.perf_counter() - t
                    t = time.perf_counter()
                    deleted = rel.delete(prompt=False)
                    t_delete = time.perf_counter() - t
                assert deleted == len(ids), (deleted, len(ids))
                results["preview"].append(t_preview)
                results["delete"].append(t_delete)
                results["mp_total"].append(t_preview + t_delete)
                peaks.append(rss.peak_kb - rss.base_kb)
                print(f"slice {s} mp_dagster: preview {t_preview:.2f} s + delete {t_delete:.2f} s; "
                      f"{sum(preview.values()):,} rows {preview}; backend RssAnon +{(rss.peak_kb - rss.base_kb) / 1024:.1f} MB "
                      f"(peak {rss.peak_kb / 1024:.1f} MB)")
            else:
                t = time.perf_counter()
                n = hand_delete(conn, name, ids)
                t_hand = time.perf_counter() - t
                results["hand"].append(t_hand)
                print(f"slice {s} hand SQL: {t_hand:.2f} s, {n:,} rows")
        s = len(order)
        explain = explain_delete(tables, [i for i in range(args.images) if i % 10 == s])
        best = {k: min(v) for k, v in results.items()}
        summary = {
            "images": args.images, "part_rows": part_rows, "rows": counts, "load_s": round(load_s, 1),
            "work_mem": work_mem, "best_s": {k: round(v, 3) for k, v in best.items()},
            "all_s": {k: [round(x, 3) for x in v] for k, v in results.items()},
            "ratio_with_preview": round(best["mp_total"] / best["hand"], 2),
            "ratio_delete_only": round(best["delete"] / best["hand"], 2),
            "backend_rss_anon_growth_mb": round(max(peaks) / 1024, 1),
            "explain": explain,
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2)
    finally:
        conn.close()
        if not args.keep:
            schema.drop(force=True)


if __name__ == "__main__":
    main()
