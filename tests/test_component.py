"""``MasterPartComponent`` and the demo as a ``dg`` project: ``dg check defs``, ``dg list defs``
and ``dg scaffold defs`` as real subprocesses, the component in-process, and a quiet load.

The demo is only imported by subprocesses (importing ``mp_dagster.demo`` declares its tables),
each on a temporary SQLite database and ``DAGSTER_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing.utils import component_defs
from pipelines import declare_ephys, declare_imaging

from mp_dagster.dagster import MasterPartComponent, build_definitions
from mp_dagster.dagster.component import ComponentAttributeError

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"
DEMO_ASSETS = {"imaging/image", "imaging/segmentation", "imaging/raw_image", "imaging/file_segmentation",
               "ephys/recording", "ephys/array_response"}


def dg_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix,
           "MP_DAGSTER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
           "DAGSTER_DG_UPDATE_CHECK_ENABLED": "0"}
    for name in ("MP_DAGSTER_DEMO_PREFIX", "MP_DAGSTER_KEYS_PER_RUN", "MP_DAGSTER_SENSOR_INTERVAL"):
        env.pop(name, None)
    return env


def run_dg(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_dg_check_defs_and_list_defs_on_the_demo(tmp_path):
    env = dg_env(tmp_path)
    done = run_dg(["check", "defs"], REPO, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr

    done = run_dg(["list", "defs", "--json"], REPO, env)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = json.loads(done.stdout)
    assert {a["asset_key"] for a in listed["assets"]} == DEMO_ASSETS
    assert {s["name"] for s in listed["sensors"]} == {
        "imaging__segmentation_pending", "imaging__raw_image_files", "imaging__file_segmentation_pending",
        "ephys__array_response_pending", "imaging__image_observe", "ephys__recording_observe",
        "imaging__raw_image_observe"}  # source tables observed
    assert {(s["name"], s["cron_schedule"]) for s in listed["schedules"]} == {
        ("ephys__array_response_schedule", "0 * * * *")}
    checks = {c["key"] for c in listed["asset_checks"]}
    assert {f"{table}:{check}" for table in ("imaging/segmentation", "imaging/file_segmentation",
                                             "ephys/array_response")
            for check in ("matches_database", "parts_complete", "no_stale_pending")} | {
        "imaging/raw_image:files_unchanged"} == checks
    # the demo's tables, on the database of the environment (not the repository's SQLite file)
    assert (tmp_path / "demo.db").exists()


def test_dg_lists_and_scaffolds_the_component(tmp_path):
    """A new project: ``dg list components`` shows the component, ``dg scaffold defs`` writes
    its defs.yaml, ``dg check defs`` loads it; a bad attribute fails naming the attribute."""
    project = tmp_path / "lab"
    (project / "lab" / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "lab"\nversion = "0"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "lab"\n')
    (project / "lab" / "__init__.py").write_text("")
    (project / "lab" / "defs" / "__init__.py").write_text("")
    (project / "lab" / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs():\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n")
    env = dg_env(tmp_path)

    done = run_dg(["list", "components", "--json"], project, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mp_dagster.dagster.MasterPartComponent" in {c["key"] for c in json.loads(done.stdout)["items"]}

    done = run_dg(["scaffold", "defs", "mp_dagster.dagster.MasterPartComponent", "tables",
                   "--json-params", '{"modules": ["mp_dagster.demo"]}'], project, env)
    assert done.returncode == 0, done.stdout + done.stderr
    defs_yaml = project / "lab" / "defs" / "tables" / "defs.yaml"
    scaffolded = defs_yaml.read_text()
    assert "type: mp_dagster.dagster.MasterPartComponent" in scaffolded and "- mp_dagster.demo" in scaffolded

    done = run_dg(["check", "defs"], project, env)
    assert done.returncode == 0, done.stdout + done.stderr

    bad = {
        "keys_per_run": scaffolded.replace("keys_per_run: auto", "keys_per_run: 0"),
        "modules": scaffolded.replace("- mp_dagster.demo", "- mp_dagster.no_such_tables"),
    }
    for attribute, text in bad.items():
        defs_yaml.write_text(text)
        done = run_dg(["check", "defs"], project, env)
        out = done.stdout + done.stderr
        assert done.returncode != 0, out
        assert f"MasterPartComponent attribute `{attribute}`" in out, out


def schemas_module(monkeypatch, **schemas) -> str:
    """A real module holding ``schemas``, importable by name, as a user's tables module is."""
    name = "mp_dagster_component_test_tables"
    module = types.ModuleType(name)
    vars(module).update(schemas)
    monkeypatch.setitem(sys.modules, name, module)
    return name


def definitions_summary(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    return {
        "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
        "groups": sorted({graph.get(k).group_name for k in graph.get_all_asset_keys()}),
        "checks": sorted(str(k) for k in graph.asset_check_keys),
        "sensors": sorted((s.name, s.minimum_interval_seconds) for s in defs.sensors or []),
        "schedules": sorted((s.name, s.cron_schedule) for s in defs.schedules or []),
    }


def test_component_in_process_matches_build_definitions(make_schema, monkeypatch):
    imaging, ephys = make_schema("img"), make_schema("eph")
    declare_imaging(imaging)
    _, ArrayResponse = declare_ephys(ephys)
    module = schemas_module(monkeypatch, imaging=imaging, ephys=ephys)
    component = MasterPartComponent.from_attributes_dict(attributes={
        "modules": [module], "keys_per_run": 10, "sensor_interval_seconds": 7,
        "schedules": {"ArrayResponse": "0 * * * *"}})
    from_yaml = definitions_summary(component_defs(component=component))
    direct = definitions_summary(build_definitions(
        imaging, ephys, keys_per_run=10, sensor_interval_seconds=7, schedules={ArrayResponse: "0 * * * *"}))
    assert from_yaml == direct
    assert len(from_yaml["assets"]) == 4 and len(from_yaml["sensors"]) == 4 and len(from_yaml["schedules"]) == 1
    assert {name for name, _ in from_yaml["sensors"] if name.endswith("_observe")} == {
        f"{imaging.name}__image_observe", f"{ephys.name}__recording_observe"}
    # observation of the source tables off (YAML `observe_sources: false`)
    quiet = MasterPartComponent.from_attributes_dict(attributes={"modules": [module], "observe_sources": False})
    assert not [s for s in component_defs(component=quiet).sensors if s.name.endswith("_observe")]

    # only some schemas (attribute or database name), no checks, a group name for all tables
    only = MasterPartComponent.from_attributes_dict(attributes={
        "modules": [module], "schemas": ["imaging"], "checks": False, "group_name": "lab"})
    summary = definitions_summary(component_defs(component=only))
    assert summary["assets"] == sorted(f"{imaging.name}/{t}" for t in ("image", "segmentation"))
    assert summary["groups"] == ["lab"] and summary["checks"] == []

    for attributes, named in [
        ({"modules": [module], "schemas": ["nope"]}, "schemas"),
        ({"modules": [module], "schedules": {"Image": "0 * * * *"}}, "schedules"),  # a Manual table
        ({"modules": [module], "max_partitions_per_run": 0}, "max_partitions_per_run"),
        ({"modules": [module], "observe_batch_size": 0}, "observe_batch_size"),
        ({"modules": [module], "translator": "mp_dagster.dagster.PopulateConfig"}, "translator"),
        ({"modules": []}, "modules"),
    ]:
        bad = MasterPartComponent.from_attributes_dict(attributes=attributes)
        with pytest.raises(ComponentAttributeError, match=f"attribute `{named}`"):
            component_defs(component=bad)


# a subprocess (it imports the demo): both ways of loading the demo, and the sensors evaluated
SAME_AND_QUIET = """
import json, os, sys, time, warnings
from pathlib import Path
import dagster as dg

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import definitions
    from mp_dagster import demo
    demo.add_demo_data(2, 1)
    for path in demo.add_demo_files(2):  # image files dropped a minute ago into raw_images/
        os.utime(demo.RawImage.files.store.local_path(path), (time.time() - 60,) * 2)
    with dg.instance_for_test() as instance:
        for sensor in definitions.defs.sensors:  # the file sensor first: it registers the files
            context = dg.build_sensor_context(instance=instance, definitions=definitions.defs)
            result = sensor.evaluate_tick(context)
            assert result.run_requests or result.asset_events, sensor.name
with warnings.catch_warnings(record=True) as caught_dg:
    warnings.simplefilter("always")
    dg_defs = dg.load_from_defs_folder(path_within_project=Path.cwd())

def summary(defs):
    graph = defs.resolve_asset_graph()
    return {
        "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
        "checks": sorted(str(k) for k in graph.asset_check_keys),
        "sensors": sorted((s.name, s.minimum_interval_seconds, str(s.default_status)) for s in defs.sensors),
        "schedules": sorted((s.name, s.cron_schedule) for s in defs.schedules),
        "jobs": sorted(j.name for j in defs.jobs),
    }

def described(ws):
    return [f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}" for w in ws]

print(json.dumps({"definitions": summary(definitions.defs), "dg": summary(dg_defs),
                  "warnings": described(caught), "dg_warnings": described(caught_dg)}))
"""

NOISY = ("BetaWarning", "PreviewWarning", "DeprecationWarning", "SupersessionWarning")


def test_demo_loads_the_same_both_ways_without_warnings(tmp_path):
    env = dg_env(tmp_path)
    env["MP_DAGSTER_KEYS_PER_RUN"] = "1"
    done = subprocess.run([sys.executable, "-c", SAME_AND_QUIET], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["definitions"] == out["dg"]
    assert set(out["definitions"]["assets"]) == DEMO_ASSETS
    assert ["ephys__array_response_pending", 5, "DefaultSensorStatus.RUNNING"] in out["definitions"]["sensors"]
    noisy = [w for w in out["warnings"] if w.split()[0] in NOISY]
    assert not noisy, noisy
    ours = [w for w in out["dg_warnings"] if "mp_dagster" in w or "backfill_policy" in w or "tag keys" in w]
    assert not ours, ours


# Dagster's four warning categories are errors: loading both ways, resolving everything the UI and
# `dg check defs` resolve, and evaluating every sensor must not raise one
STRICT_LOAD = """
import warnings
from pathlib import Path
import dagster as dg

for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning, DeprecationWarning):
    warnings.filterwarnings("error", category=category)
import definitions
from mp_dagster import demo
demo.add_demo_data(2, 1)
loaded = {"definitions.py": definitions.defs, "dg": dg.load_from_defs_folder(path_within_project=Path.cwd())}
for way, defs in loaded.items():
    repository = defs.get_repository_def()
    assert len(repository.asset_checks_defs_by_key) == 10, way  # 3 per master, files_unchanged
    assert repository.asset_graph.get_all_asset_keys(), way
    assert repository.get_all_jobs(), way
    with dg.instance_for_test() as instance:
        for sensor in defs.sensors:
            sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    print(way, "quiet:", sorted(s.name for s in defs.sensors))
"""


def test_code_load_raises_no_dagster_warning(tmp_path):
    """Issue 14: no BetaWarning (``execution_type``, ``backfill_policy``), PreviewWarning,
    SupersessionWarning or DeprecationWarning (partition tag keys) from loading the demo as
    ``definitions.py`` and as the ``dg`` project's Component, with warnings turned into errors."""
    done = subprocess.run([sys.executable, "-c", STRICT_LOAD], cwd=REPO, env=dg_env(tmp_path),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "definitions.py quiet" in done.stdout and "dg quiet" in done.stdout
    assert "imaging__image_observe" in done.stdout


def test_dg_project_defaults_to_the_demo_sqlite_file_next_to_definitions_py():
    env = {k: v for k, v in os.environ.items() if k != "MP_DAGSTER_DATABASE_URL"}
    code = "import os, mp_dagster.demo_project.definitions; print(os.environ['MP_DAGSTER_DATABASE_URL'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"sqlite:///{REPO / 'mp_dagster_demo.db'}"


def test_component_silences_nothing_of_the_users(schema, monkeypatch):
    """The BetaWarning filter is around our dg.asset call only: the user's own beta calls warn."""
    declare_imaging(schema)
    component = MasterPartComponent.from_attributes_dict(attributes={"modules": [schemas_module(monkeypatch, s=schema)]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        component_defs(component=component)

        @dg.asset(backfill_policy=dg.BackfillPolicy.single_run(), partitions_def=dg.StaticPartitionsDefinition(["a"]))
        def users_asset():
            return None

    beta = [w for w in caught if issubclass(w.category, dg.BetaWarning)]
    assert len(beta) == 1 and "backfill_policy" in str(beta[0].message), [str(w.message) for w in caught]
