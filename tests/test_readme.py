"""The README's Python examples run, in order, as a new user would paste them (SQLite file),
next to the demo in one folder: ``mp-dagster demo-data`` before and after them, on the same
default database file, finds its own tables untouched (the examples use their own schemas)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_readme_python_examples_run_next_to_the_demo(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 8
    shutil.copytree(README.parent / "deploy", tmp_path / "deploy")  # as in the project's folder
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks))
    # one folder, no URL: the README and the demo share the default SQLite file mp_dagster.db
    env = {k: v for k, v in os.environ.items()
           if k not in ("MP_DAGSTER_DATABASE_URL", "MP_DAGSTER_DEMO_PREFIX", "DAGSTER_HOME")}
    demo = run(["-m", "mp_dagster.cli", "demo-data", "--images", "2", "--recordings", "1"], tmp_path, env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    done = run([str(script)], tmp_path, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "'success_count': 3" in done.stdout
    assert "attribute 'label' is in the class but not in the database" in done.stdout
    again = run(["-m", "mp_dagster.cli", "demo-data", "--images", "2"], tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr  # no drift error: the demo's tables are its own
    with sqlite3.connect(tmp_path / "mp_dagster.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert db.execute('SELECT count(*) FROM "imaging.image"').fetchone() == (4,)
    assert {"imaging.image", "ephys.recording", "lab_imaging.image", "lab_ephys.recording"} <= tables
