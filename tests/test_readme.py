"""The README's Python examples run, in order, as a new user would paste them (SQLite file)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 8
    shutil.copytree(README.parent / "deploy", tmp_path / "deploy")  # as in the project's folder
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "MP_DAGSTER_DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "'success_count': 3" in done.stdout
    assert "attribute 'label' is in the class but not in the database" in done.stdout
