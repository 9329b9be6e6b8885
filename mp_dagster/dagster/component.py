"""``MasterPartComponent``: ``build_definitions`` as a Dagster Component, loaded from ``defs.yaml``.

Dagster 1.13 builds projects from components (``dg dev``, ``dg check defs``, ``dg list defs``,
``dg scaffold defs``); this one turns the ``mp.Schema`` objects of some Python modules into the
assets, sensors, schedules and checks of ``build_definitions``::

    type: mp_dagster.dagster.MasterPartComponent
    attributes:
      modules: [mp_dagster.demo]          # their mp.Schema objects are collected
      keys_per_run: auto
      sensor_interval_seconds: 5
      schedules: {ArrayResponse: "0 * * * *"}

Every attribute is checked when the component loads, and a bad one fails ``dg check defs``
with a message that names it.
"""

import importlib
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from ..schema import Schema
from ..table import Table
from .build import AUTO_TIERS, build_definitions
from .observe import MAX_OBSERVED_PER_TICK
from .sensors import AUTO, RetryPolicy
from .translator import MasterPartTranslator


class ScaffoldParams(dg.Model):
    """``dg scaffold defs mp_dagster.dagster.MasterPartComponent <path> --json-params
    '{"modules": ["my_lab.tables"]}'``: the modules whose schemas the new component loads."""

    modules: list[str] = ["my_lab.tables"]


class MasterPartScaffolder(dg.Scaffolder[ScaffoldParams]):
    """Writes a ``defs.yaml`` with the modules and the defaults spelled out, to edit."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        modules = list(request.params.modules) if request.params else list(ScaffoldParams().modules)
        dg.scaffold_component(request, {
            "modules": modules, "keys_per_run": AUTO, "sensor_interval_seconds": 30, "checks": True,
            "observe_sources": True, "schedules": {},
        })


class RetryModel(dg.Model):
    """The sensor's ``RetryPolicy``: failed keys are requested again ``max_retries`` times, after
    ``backoff_seconds``, then twice that, and so on."""

    max_retries: int = 3
    backoff_seconds: float = 60.0


class ComponentAttributeError(ValueError):
    """A ``defs.yaml`` attribute that cannot be used; the message starts with its name."""

    def __init__(self, attribute: str, message: str):
        super().__init__(f"MasterPartComponent attribute `{attribute}`: {message}")
        self.attribute = attribute


def import_object(path: str, attribute: str) -> Any:
    """``package.module.Name`` (or ``package.module:Name``) -> the object."""
    module_name, sep, name = path.replace(":", ".").rpartition(".")
    if not sep or not name:
        raise ComponentAttributeError(attribute, f"{path!r} is not a dotted path `package.module.Name`")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ComponentAttributeError(attribute, f"cannot import {path!r}: {exc}") from exc


def collect_schemas(modules: list[str], names: list[str] | None) -> list[Schema]:
    """The ``mp.Schema`` objects defined at the top of ``modules``, in order; with ``names``,
    only those (a module attribute name, e.g. ``imaging``, or the schema's database name)."""
    if not modules:
        raise ComponentAttributeError("modules", "name at least one module whose mp.Schema objects to load")
    found: dict[int, tuple[str, Schema]] = {}
    for module_name in modules:
        if not isinstance(module_name, str) or not module_name:
            raise ComponentAttributeError("modules", f"{module_name!r} is not a dotted module name")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ComponentAttributeError("modules", f"cannot import module {module_name!r}: {exc}") from exc
        in_module = [(attr, obj) for attr, obj in vars(module).items() if isinstance(obj, Schema)]
        if not in_module:
            raise ComponentAttributeError("modules", f"module {module_name!r} defines no mp.Schema")
        for attr, obj in in_module:
            found.setdefault(id(obj), (attr, obj))
    if names is None:
        return [s for _, s in found.values()]
    chosen: list[Schema] = []
    for name in names:
        matches = [s for attr, s in found.values() if name in (attr, s.name)]
        if not matches:
            known = sorted({a for a, _ in found.values()} | {s.name for _, s in found.values()})
            raise ComponentAttributeError("schemas", f"no mp.Schema named {name!r} in {modules} (known: {known})")
        chosen.extend(s for s in matches if all(s is not c for c in chosen))
    return chosen


def resolve_schedules(schemas: list[Schema], schedules: dict[str, str]) -> dict[type[Table], str]:
    """``{table: cron}`` with each table named by its class (``ArrayResponse``), its database
    name (``ephys.array_response``) or schema attribute + class (``ephys.ArrayResponse``)."""
    masters = [t for s in schemas for t in s.tables if t.tier in AUTO_TIERS]  # Schema.tables: masters
    out: dict[type[Table], str] = {}
    for name, cron in schedules.items():
        matches = [t for t in masters if name in (t.__name__, t.full_name, f"{t.schema.name}.{t.__name__}")]
        if len(matches) != 1:
            known = sorted(t.__name__ for t in masters)
            why = "names several tables" if matches else "is not an auto-populated master here"
            raise ComponentAttributeError("schedules", f"{name!r} {why} (tables: {known})")
        if not isinstance(cron, str) or len(cron.split()) not in (5, 6):
            raise ComponentAttributeError("schedules", f"{name}: {cron!r} is not a cron string like '0 * * * *'")
        out[matches[0]] = cron
    return out


def make_translator(translator: str | None, group_name: str | None) -> MasterPartTranslator:
    cls = import_object(translator, "translator") if translator else MasterPartTranslator
    if not (isinstance(cls, type) and issubclass(cls, MasterPartTranslator)):
        raise ComponentAttributeError("translator", f"{translator!r} is not a MasterPartTranslator subclass")
    instance = cls()
    if group_name is not None:
        instance.get_group_name = lambda table: group_name  # type: ignore[method-assign]
    return instance


def positive_int(value: Any, attribute: str, allow_none: bool = False, other: str = "") -> int | None:
    if value is None and allow_none:
        return None
    try:
        number = int(value)  # templated values ({{ env.X }}) arrive as text
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or str(number) != str(value).strip():
        raise ComponentAttributeError(attribute, f"must be {other}a whole number of at least 1, not {value!r}")
    return number


@dg.scaffold_with(MasterPartScaffolder)
@dataclass
class MasterPartComponent(dg.Component, dg.Resolvable):
    """DataJoint-style master-part tables as partitioned assets: every master of the ``mp.Schema``
    objects in ``modules`` becomes an asset; auto-populated masters get a job, a sensor on their
    pending keys, asset checks and optional schedules (see ``mp_dagster.dagster.build_definitions``).
    """

    modules: list[str] = field(default_factory=list)
    """Dotted module names; every ``mp.Schema`` defined in them is loaded (importing a module
    declares its tables)."""
    schemas: list[str] | None = None
    """Only these schemas of ``modules`` (module attribute names or database schema names)."""
    keys_per_run: int | str = AUTO
    """New keys per sensor/schedule run: ``auto`` (about as many runs as run at once) or N."""
    max_partitions_per_run: int | None = None
    """Backfills from the UI: one run (unset) or runs of at most this many keys."""
    sensors: bool = True
    """One pending-key sensor per auto-populated master."""
    sensor_interval_seconds: int = 30
    """Minimum seconds between two ticks of each sensor."""
    sensors_running: bool = True
    """Sensors start running (else stopped, to be turned on in the UI)."""
    observe_sources: bool = True
    """One observation sensor per Manual/Lookup master: its rows show as present partitions."""
    observe_batch_size: int = MAX_OBSERVED_PER_TICK
    """At most this many new rows reported per observation tick (each is one Dagster event)."""
    schedules: dict[str, str] = field(default_factory=dict)
    """Table (class name, ``schema.table`` or ``schema.Class``) -> cron string."""
    checks: bool = True
    """Asset checks ``matches_database``, ``parts_complete``, ``no_stale_pending``."""
    stale_pending_seconds: float = 3600.0
    """``no_stale_pending`` fails for keys requested longer ago than this."""
    retry: RetryModel | None = None
    """Failed keys requested again by the sensor (default 3 times, after 60, 120, 240 s)."""
    translator: str | None = None
    """Dotted path of a ``MasterPartTranslator`` subclass (``package.module.Class``)."""
    group_name: str | None = None
    """One asset group for every table (default: the schema's name)."""

    def schema_objects(self) -> list[Schema]:
        return collect_schemas(list(self.modules), None if self.schemas is None else list(self.schemas))

    def build_kwargs(self) -> tuple[list[Schema], dict[str, Any]]:
        """The schemas and ``build_definitions`` arguments these attributes stand for."""
        schemas = self.schema_objects()
        keys_per_run: int | str = AUTO if self.keys_per_run == AUTO else positive_int(
            self.keys_per_run, "keys_per_run", other="'auto' or ")
        retry = self.retry if isinstance(self.retry, RetryModel) or self.retry is None else RetryModel(**self.retry)
        if retry is not None and (retry.max_retries < 0 or retry.backoff_seconds < 0):
            raise ComponentAttributeError("retry", f"max_retries and backoff_seconds must not be negative: {retry}")
        if float(self.stale_pending_seconds) < 0:
            raise ComponentAttributeError("stale_pending_seconds", f"must not be negative, not {self.stale_pending_seconds!r}")
        return schemas, dict(
            translator=make_translator(self.translator, self.group_name),
            sensors=bool(self.sensors),
            sensor_interval_seconds=positive_int(self.sensor_interval_seconds, "sensor_interval_seconds"),
            sensor_default_status=(dg.DefaultSensorStatus.RUNNING if self.sensors_running
                                   else dg.DefaultSensorStatus.STOPPED),
            keys_per_run=keys_per_run,
            schedules=resolve_schedules(schemas, dict(self.schedules or {})),
            checks=bool(self.checks),
            stale_pending_seconds=float(self.stale_pending_seconds),
            max_partitions_per_run=positive_int(self.max_partitions_per_run, "max_partitions_per_run",
                                                allow_none=True),
            retry=None if retry is None else RetryPolicy(retry.max_retries, retry.backoff_seconds),
            observe_sources=bool(self.observe_sources),
            observe_batch_size=positive_int(self.observe_batch_size, "observe_batch_size"),
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        schemas, kwargs = self.build_kwargs()
        return build_definitions(*schemas, **kwargs)
