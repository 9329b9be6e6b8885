"""``mp-dagster``, run as a real subprocess on the demo tables, on PostgreSQL and on SQLite.

Each PostgreSQL run isolates its demo schemas with ``MP_DAGSTER_DEMO_PREFIX`` and drops them
afterwards; each SQLite run uses a fresh file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from mp_dagster.cli import EXIT_DECLINED, EXIT_FAILED, EXIT_OK, EXIT_USAGE

TIMEOUT = 120
POPULATE = "from mp_dagster import demo; demo.Segmentation.populate(); demo.ArrayResponse.populate()"


class Demo:
    """The demo tables on one database, driven through the CLI."""

    def __init__(self, url: str, prefix: str, cwd: Path) -> None:
        self.url, self.prefix, self.cwd = url, prefix, cwd
        self.env = {**os.environ, "MP_DAGSTER_DEMO_PREFIX": prefix}
        for name in ("DAGSTER_HOME", "MP_DAGSTER_DATABASE_URL"):
            self.env.pop(name, None)

    def name(self, schema: str, table: str) -> str:
        return f"{self.prefix}{schema}.{table}"

    def cli(self, *args: str, env: dict[str, str] | None = None, stdin=subprocess.DEVNULL,
            module: bool = True) -> subprocess.CompletedProcess:
        pre = ["--database-url", self.url] + (["--module", "mp_dagster.demo"] if module else [])
        return subprocess.run(
            [sys.executable, "-m", "mp_dagster.cli", *pre, *args], cwd=self.cwd, env=env or self.env,
            stdin=stdin, capture_output=True, text=True, timeout=TIMEOUT,
        )

    def python(self, code: str, env: dict[str, str] | None = None) -> None:
        env = {**(env or self.env), "MP_DAGSTER_DATABASE_URL": self.url}
        done = subprocess.run([sys.executable, "-c", code], cwd=self.cwd, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stdout + done.stderr

    def count(self, schema: str, table: str) -> int:
        """Rows counted directly in the database, not through mp_dagster."""
        if self.url.startswith("sqlite"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                return conn.execute(f'SELECT count(*) FROM "{self.prefix}{schema}.{table}"').fetchone()[0]
        with psycopg.connect(self.url) as conn:
            return conn.execute(f'SELECT count(*) FROM "{self.prefix}{schema}"."{table}"').fetchone()[0]

    def counts(self) -> dict[str, int]:
        return {t: self.count(s, t) for s, t in TABLES}


TABLES = [
    ("imaging", "image"), ("imaging", "segmentation"), ("imaging", "segmentation__roi"),
    ("ephys", "recording"), ("ephys", "array_response"),
    ("ephys", "array_response__electrode_response"), ("ephys", "array_response__channel_response"),
]


@pytest.fixture
def demo(db_url, tmp_path):
    prefix = f"cli{uuid.uuid4().hex[:8]}_"
    yield Demo(db_url, prefix, tmp_path)
    if db_url.startswith("postgresql"):
        with psycopg.connect(db_url, autocommit=True) as conn:
            for schema in ("imaging", "ephys"):
                conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}{schema}" CASCADE')


@pytest.fixture
def sqlite_demo(tmp_path):
    return Demo(f"sqlite:///{tmp_path / 'cli.db'}", "", tmp_path)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    return done.stdout


def one_line_error(done: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mp-dagster: error: "), done.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def by_table(status_json: str) -> dict[str, dict]:
    return {t["table"]: t for t in json.loads(status_json)["tables"]}


# --------------------------------------------------------------------------------------------


def test_status_diagram_delete_on_the_demo(demo):
    n = demo.name
    ok(demo.cli("demo-data", "--images", "3", "--recordings", "1"))
    status = by_table(ok(demo.cli("status", "--json")))
    assert status[n("imaging", "segmentation")]["rows"] == 0
    assert status[n("imaging", "segmentation")]["pending"] == 3
    assert status[n("ephys", "array_response")]["pending"] == 1
    assert status[n("imaging", "image")]["rows"] == 3 and status[n("imaging", "image")]["pending"] is None

    demo.python(POPULATE)
    before = demo.counts()
    assert before["segmentation__roi"] > 0 and before["array_response__channel_response"] == 16
    key = "image_id=1"
    with ThreadPoolExecutor(6) as pool:  # read-only commands: run them together
        status_json, status_text, diagram, dot, refused, dry = pool.map(lambda args: demo.cli(*args), [
            ["status", "--json"], ["status"], ["diagram"], ["diagram", "--dot"],
            ["delete", "Segmentation", key], ["delete", "Segmentation", key, "--dry-run"],
        ])
    status = by_table(ok(status_json))
    seg = status[n("imaging", "segmentation")]
    assert (seg["tier"], seg["rows"], seg["pending"], seg["keys"], seg["failed"]) == ("computed", 3, 0, 3, None)
    assert seg["parts"] == [{"table": n("imaging", "segmentation__roi"), "class": "Segmentation.ROI",
                             "rows": before["segmentation__roi"]}]
    arr = status[n("ephys", "array_response")]
    assert [(p["table"], p["rows"]) for p in arr["parts"]] == [
        (n("ephys", "array_response__electrode_response"), 4),
        (n("ephys", "array_response__channel_response"), 16),
    ]

    # the text table: aligned columns, parts indented under their master
    text = ok(status_text).splitlines()
    header = next(i for i, line in enumerate(text) if line.startswith("TABLE"))
    assert text[header].split() == ["TABLE", "TIER", "ROWS", "PENDING", "FAILED"]
    rows = {line.split()[0]: line for line in text[header + 1:]}
    assert rows[n("imaging", "segmentation")].split()[1:] == ["computed", "3", "0", "-"]
    assert rows[n("imaging", "segmentation__roi")].startswith("  ")
    assert rows[n("imaging", "segmentation__roi")].split()[1:] == ["part", str(before["segmentation__roi"])]
    assert len({len(line) for line in (text[header], rows[n("imaging", "segmentation")])}) == 1  # aligned

    diagram = ok(diagram)
    for parent, child in [(n("imaging", "image"), n("imaging", "segmentation")),
                          (n("imaging", "segmentation"), n("imaging", "segmentation__roi")),
                          (n("ephys", "array_response__electrode_response"),
                           n("ephys", "array_response__channel_response"))]:
        assert f"{parent} -> {child}" in diagram
    assert f"\n      {n('imaging', 'segmentation__roi')}  (Segmentation.ROI, part)" in diagram
    dot = ok(dot)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert f'"{n("imaging", "image")}" -> "{n("imaging", "segmentation")}";' in dot
    assert f'"{n("ephys", "array_response__electrode_response")}" -> "{n("ephys", "array_response__channel_response")}";' in dot
    cluster = dot.split(f'subgraph "cluster_{n("imaging", "segmentation")}"')[1].split("}")[0]
    assert f'"{n("imaging", "segmentation__roi")}" [' in cluster

    # delete without --yes, stdin not a terminal: refuses at once, deletes nothing
    one_line_error(refused, EXIT_USAGE, "stdin is not a terminal", "--yes")
    assert ok(dry).startswith(f"delete from {n('imaging', 'segmentation')} where image_id=1 would remove:")
    assert demo.counts() == before

    # with --yes: the preview, then the master entry and its parts go; the image stays
    done = ok(demo.cli("delete", "Segmentation", key, "--yes"))
    lines = done.splitlines()
    assert lines[1].split() == ["1", n("imaging", "segmentation")]
    roi_deleted = int(lines[2].split()[0])
    assert lines[2].split()[1:] == [n("imaging", "segmentation__roi"), "(part)"] and roi_deleted > 0
    assert lines[-1].startswith(f"deleted 1 row(s) from {n('imaging', 'segmentation')}")
    after = demo.counts()
    assert after == {**before, "segmentation": 2, "segmentation__roi": before["segmentation__roi"] - roi_deleted}

    # a schema.table name, an ephys entry with two levels of parts
    ok(demo.cli("delete", n("ephys", "array_response"), "array=0", "--yes"))
    assert demo.counts() == {**after, "array_response": 0, "array_response__electrode_response": 0,
                             "array_response__channel_response": 0}
    status = by_table(ok(demo.cli("status", "--json")))
    assert status[n("imaging", "segmentation")]["pending"] == 1
    assert status[n("ephys", "array_response")]["pending"] == 1

    nothing = ok(demo.cli("delete", "Segmentation", "image_id=1", "--yes"))
    assert nothing.startswith("nothing to delete")


def test_interactive_confirmation(sqlite_demo):
    """On a terminal, anything but "yes" deletes nothing (exit 3); "yes" deletes."""
    demo = sqlite_demo
    ok(demo.cli("demo-data", "--images", "2", "--recordings", "0"))
    demo.python(POPULATE)
    before = demo.counts()

    def answer(text: str) -> subprocess.CompletedProcess:
        primary, secondary = os.openpty()
        try:
            os.write(primary, text.encode())  # buffered by the terminal until read
            return demo.cli("delete", "Segmentation", "image_id=0", stdin=secondary)
        finally:
            os.close(primary)
            os.close(secondary)

    declined = answer("no\n")
    assert declined.returncode == EXIT_DECLINED, declined.stdout + declined.stderr
    assert "Proceed? [yes/No]" in declined.stdout and "nothing deleted" in declined.stderr
    assert demo.counts() == before
    confirmed = answer("yes\n")
    assert ok(confirmed).splitlines()[-1].endswith("deleted 1 row(s) from imaging.segmentation, with "
                                                   "their parts and dependent rows")
    assert demo.count("imaging", "segmentation") == 1
    assert demo.count("imaging", "segmentation__roi") < before["segmentation__roi"]


def test_errors_are_one_line_with_meaningful_exit_codes(sqlite_demo):
    demo = sqlite_demo
    ok(demo.cli("demo-data", "--images", "1", "--recordings", "0"))
    demo.python(POPULATE)
    before = demo.counts()
    demo_args = ["--database-url", demo.url, "--module", "mp_dagster.demo"]
    cases = [  # (arguments, exit code, what the one line says)
        (["delete", "Nope", "image_id=0", "--yes"], EXIT_USAGE, ["unknown table 'Nope'", "imaging.image"]),
        (["delete", "Segmentation", "image_id", "--yes"], EXIT_USAGE, ["malformed KEY 'image_id'"]),
        (["delete", "Segmentation", "image=0", "--yes"], EXIT_USAGE, ["no attribute 'image'", "image_id"]),
        (["delete", "Segmentation", "image_id=zero", "--yes"], EXIT_USAGE, ["'zero' is not a valid int32"]),
        (["delete", "Segmentation", "--yes"], EXIT_USAGE, ["--all"]),
        (["delete", "Segmentation.ROI", "image_id=0", "--yes"], EXIT_FAILED,
         ["is a part of imaging.segmentation", "(`mp-dagster delete imaging.segmentation image_id=0`)",
          "--part-integrity cascade"]),
        (["delete", "--part-integrity", "sometimes", "Segmentation", "image_id=0"], EXIT_USAGE,
         ["delete: argument --part-integrity: invalid choice"]),
        (["delete", "Segmentation", "image_id=0", "--all", "--yes"], EXIT_USAGE, ["either KEY items or --all"]),
        (["frobnicate"], EXIT_USAGE, ["invalid choice: 'frobnicate'"]),
    ]
    cases = [(demo_args + args, code, fragments) for args, code, fragments in cases] + [
        (["--database-url", demo.url, "status"], EXIT_USAGE, ["no tables: pass --module"]),
        (["--module", "no_such_module_here", "status"], EXIT_USAGE, ["cannot import no_such_module_here"]),
        (["--module", "missing.py", "status"], EXIT_USAGE, ["cannot import missing.py: no such file"]),
        (["--database-url", "mysql://x", "-m", "mp_dagster.demo", "status"], EXIT_USAGE, ["--database-url"]),
        (["--database-url", "postgresql://postgres@127.0.0.1:1/none", "-m", "mp_dagster.demo", "status"],
         EXIT_FAILED, ["cannot connect to PostgreSQL"]),
    ]

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mp_dagster.cli", *args], cwd=demo.cwd, env=demo.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT)

    with ThreadPoolExecutor(8) as pool:  # independent subprocesses: run them together
        results = list(pool.map(lambda case: run(case[0]), cases))
    for (_, code, fragments), done in zip(cases, results):
        one_line_error(done, code, *fragments)
    assert demo.counts() == before

    every = ok(demo.cli("delete", "Segmentation", "--all", "--dry-run"))
    assert every.splitlines()[:2] == ["delete from imaging.segmentation (every row) would remove:",
                                      f"  {1:>8}  imaging.segmentation"]
    assert demo.counts() == before

    # a part with --part-integrity cascade takes the whole master entry
    ok(demo.cli("delete", "Segmentation.ROI", "image_id=0", "roi=0", "--part-integrity", "cascade", "--yes"))
    assert demo.count("imaging", "segmentation") == 0 and demo.count("imaging", "segmentation__roi") == 0


def test_declare_a_file_module_and_definitions_py_by_default(tmp_path):
    db = tmp_path / "lab.db"
    (tmp_path / "helpers.py").write_text("COMMENT = 'a session'\n")
    (tmp_path / "definitions.py").write_text(textwrap.dedent('''
        import mp_dagster as mp
        from helpers import COMMENT  # the file's directory is importable

        lab = mp.Schema("lab")

        @lab
        class Session(mp.Manual):
            definition = f"""  # {COMMENT}
            session : int
            """

        @lab
        class Summary(mp.Computed):
            definition = """
            -> Session
            ---
            n : int
            """

            class Item(mp.Part):
                definition = """
                -> master
                item : int
                """
    '''))
    env = {k: v for k, v in os.environ.items() if k not in ("MP_DAGSTER_DATABASE_URL", "DAGSTER_HOME")}
    env["MP_DAGSTER_DATABASE_URL"] = f"sqlite:///{db}"  # the default, as a lab would set it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).parent / "mp-dagster"), *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)

    out = ok(run("declare", "--module", str(tmp_path / "definitions.py"), cwd=elsewhere))
    assert out.splitlines()[0].startswith("declared 3 tables in 1 schema(s) (lab)")
    assert ["lab.summary", "computed", "Summary"] in [line.split() for line in out.splitlines()]
    assert ["lab.summary__item", "part", "Summary.Item"] in [line.split() for line in out.splitlines()]
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"lab.session", "lab.summary", "lab.summary__item"} <= names
    assert not (elsewhere / "mp_dagster.db").exists()

    status = by_table(ok(run("status", "--json", cwd=tmp_path)))  # definitions.py in the cwd
    assert status["lab.summary"]["parts"][0]["table"] == "lab.summary__item"
    assert status["lab.summary"]["pending"] == 0

    # an exception in the module: one line naming the file; a declaration the database
    # contradicts: a library error
    (tmp_path / "broken.py").write_text("import mp_dagster\nraise RuntimeError('oops')\n")
    one_line_error(run("-m", "broken.py", "status", cwd=tmp_path), EXIT_USAGE,
                   "cannot import broken.py: RuntimeError: oops", "broken.py, line 2")
    (tmp_path / "changed.py").write_text(
        (tmp_path / "definitions.py").read_text().replace("session : int", "session : int64"))
    one_line_error(run("-m", "changed.py", "declare", cwd=tmp_path), EXIT_FAILED, "lab.session")


def test_failed_keys_come_from_dagster(sqlite_demo, tmp_path):
    demo = sqlite_demo
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**demo.env, "DAGSTER_HOME": str(home)}
    ok(demo.cli("demo-data", "--images", "2", "--recordings", "0"))
    demo.python(textwrap.dedent("""
        import dagster as dg
        from mp_dagster import demo
        from mp_dagster.dagster import build_definitions

        demo.Segmentation.populate()
        demo.Image.insert1(dict(image_id=9, image="not an image"))  # make() fails on it
        defs = build_definitions(demo.imaging, sensors=False, checks=False)
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("imaging__image", ["9"])
            job = defs.resolve_job_def("imaging__segmentation_job")
            assert not job.execute_in_process(partition_key="9", instance=instance, raise_on_error=False).success
    """), env=env)
    ok(demo.cli("demo-data", "--images", "1", "--recordings", "0"))  # image 10: pending, never run
    status = by_table(ok(demo.cli("status", "--json", env=env)))
    seg = status["imaging.segmentation"]
    assert (seg["rows"], seg["pending"], seg["failed"]) == (2, 2, 1)
    assert status["imaging.image"]["failed"] is None and status["ephys.array_response"]["failed"] == 0
    line = next(x for x in ok(demo.cli("status", env=env)).splitlines() if x.startswith("imaging.segmentation "))
    assert line.split()[1:] == ["computed", "2", "2", "1"]
    # without an instance: "-"
    seg = by_table(ok(demo.cli("status", "--json")))["imaging.segmentation"]
    assert (seg["pending"], seg["failed"]) == (2, None)
    # Dagster's one-planned-event-per-run setting (deploy/dagster.env): failures are not
    # recorded per partition, so the count is unknown ("-"), not 0
    done = demo.cli("status", "--json", env={**env, "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"})
    assert by_table(ok(done))["imaging.segmentation"]["failed"] is None
    assert "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" in done.stderr


def test_help_documents_the_commands_and_exit_codes():
    done = subprocess.run([sys.executable, "-m", "mp_dagster.cli", "--help"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    out = ok(done)
    for word in ("status", "diagram", "delete", "declare", "demo-data", "--database-url", "--module",
                 "exit codes", "130"):
        assert word in out
    delete_help = ok(subprocess.run([sys.executable, "-m", "mp_dagster.cli", "delete", "--help"],
                                    capture_output=True, text=True, timeout=TIMEOUT))
    assert "--part-integrity" in delete_help and "--yes" in delete_help and "3 " in delete_help


def test_status_and_diagram_never_create_anything(tmp_path, pg_url):
    """A mistyped database: status and diagram fail (exit 1) naming it, and create no file, no
    directory, no schema and no table; on an existing database they create no missing table."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MP_DAGSTER_DATABASE_URL")}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mp_dagster.cli", *args], cwd=tmp_path,
                              env={**env, **extra}, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=TIMEOUT)

    typo = tmp_path / "no_such_dir" / "lab.db"
    for command in ("status", "diagram"):
        done = cli("--database-url", f"sqlite:///{typo}", "-m", "mp_dagster.demo", command)
        one_line_error(done, EXIT_FAILED, str(typo), "does not exist")
    assert not typo.parent.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    one_line_error(cli("--database-url", f"sqlite:///{empty}", "-m", "mp_dagster.demo", "status"), EXIT_FAILED,
                   "imaging.image: the table does not exist", "read-only")
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    prefix = f"ro{uuid.uuid4().hex[:8]}_"
    done = cli("--database-url", pg_url, "-m", "mp_dagster.demo", "status", MP_DAGSTER_DEMO_PREFIX=prefix)
    one_line_error(done, EXIT_FAILED, f"{prefix}imaging.image: the table does not exist")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE %s",
                            (prefix + "%",)).fetchone()[0] == 0


def test_status_says_where_failed_comes_from_and_import_errors_are_usage_errors(sqlite_demo, tmp_path):
    demo = sqlite_demo
    ok(demo.cli("demo-data", "--images", "2"))
    assert (demo.count("imaging", "image"), demo.count("ephys", "recording")) == (2, 0)  # only images
    ok(demo.cli("demo-data", "--recordings", "1"))
    assert (demo.count("imaging", "image"), demo.count("ephys", "recording")) == (2, 1)
    text = ok(demo.cli("status"))
    assert "read from the Dagster instance in $DAGSTER_HOME: none is set" in text
    help_text = " ".join(ok(demo.cli("demo-data", "--help")).split())
    assert "alone, adds only images" in help_text and "3 images and 1 recording" in help_text
    # the module's own code fails at import (a duplicate insert): the module's fault, exit 2
    (tmp_path / "dup.py").write_text(textwrap.dedent("""
        from mp_dagster import demo
        demo.Image.insert1(dict(image_id=0, image=demo.synthetic_image(0)))
    """))
    done = subprocess.run([sys.executable, "-m", "mp_dagster.cli", "--database-url", demo.url, "-m", "dup.py",
                           "declare"], cwd=tmp_path, env=demo.env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)
    one_line_error(done, EXIT_USAGE, "cannot import dup.py: DuplicateError", "imaging.image")
