"""The definition grammar: DataJoint's ``definition`` strings parsed into a :class:`TableDefinition`.

::

    # optional table comment
    -> Parent                         # foreign key; its primary key joins ours
    name [= default] : type [# comment]
    ---                               # three or more dashes: secondary attributes follow
    -> [nullable] Other               # secondary foreign keys may be nullable / unique
    -> Other.proj(other_b='other_id') # renamed: our other_b references Other's other_id
    other = null : float64
    index(a, b)
    unique index(other)

Parsing never touches the database; the backends turn a ``TableDefinition`` into DDL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError, DeclarationError
from .heading import Attribute, Heading, parse_type
from .values import to_sql_value

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
CURRENT_TIMESTAMP = "CURRENT_TIMESTAMP"


def to_snake_case(class_name: str) -> str:
    """``SegmentationParam`` -> ``segmentation_param``; acronyms stay whole (``ROI`` -> ``roi``)."""
    if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", class_name):
        raise DeclarationError(
            f"table class name {class_name!r} must be CamelCase (letters and digits, "
            "starting with a capital letter)"
        )
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", class_name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    return s.lower()


def check_identifier(name: str, what: str) -> str:
    """Validate a SQL identifier we create (schema, table, attribute names)."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name) or len(name) > MAX_IDENTIFIER:
        raise DeclarationError(
            f"invalid {what} name {name!r}: use lowercase letters, digits and underscores, "
            f"starting with a letter, at most {MAX_IDENTIFIER} characters"
        )
    return name


@dataclass(frozen=True)
class ForeignKey:
    """``-> Parent`` or ``-> Parent.proj(new='old')``: ``attributes`` (ours) reference the
    parent's primary key ``parent_attributes``, position by position (same names unless renamed)."""

    parent: Any  # the parent table class
    attributes: tuple[str, ...]
    in_key: bool
    nullable: bool = False
    unique: bool = False
    parent_attributes: tuple[str, ...] = ()  # empty: the same names as ``attributes``

    @property
    def parent_name(self) -> str:
        return self.parent.full_name

    @property
    def referenced(self) -> tuple[str, ...]:
        """The parent's attribute names, in the order of ``attributes``."""
        return self.parent_attributes or self.attributes

    @property
    def renames(self) -> dict[str, str]:
        """``{our name: parent's name}`` for the renamed attributes only."""
        return {a: p for a, p in zip(self.attributes, self.referenced) if a != p}


@dataclass(frozen=True)
class Index:
    attributes: tuple[str, ...]
    unique: bool = False


@dataclass
class TableDefinition:
    """Everything a definition string declares."""

    table: str  # full name, for error messages
    comment: str = ""
    heading: Heading = field(default_factory=Heading)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    # a part's columns holding its master's primary key, in the master's key order (set when the
    # part is declared: the same names after ``-> master``, others after a renamed reference)
    master_key: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        """The structural content compared against the database when a table is declared again.

        Comments are left out on purpose: editing a comment must not break a running pipeline.
        """
        return {
            "attributes": [a.spec() for a in self.heading],
            "foreign_keys": [
                {
                    "parent": fk.parent_name,
                    "attributes": list(fk.attributes),
                    "nullable": fk.nullable,
                    "unique": fk.unique,
                    # only when renamed: specs stored before renames existed stay equal
                    **({"parent_attributes": list(fk.referenced)} if fk.renames else {}),
                }
                for fk in self.foreign_keys
            ],
            "indexes": [{"attributes": list(ix.attributes), "unique": ix.unique} for ix in self.indexes],
        }


def describe_difference(table: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Name what differs between two ``TableDefinition.spec()`` dicts, attribute by attribute."""
    out: list[str] = []
    old_attrs = {a["name"]: a for a in old.get("attributes", [])}
    new_attrs = {a["name"]: a for a in new.get("attributes", [])}
    for name in new_attrs.keys() - old_attrs.keys():
        out.append(f"attribute {name!r} is in the class but not in the database")
    for name in old_attrs.keys() - new_attrs.keys():
        out.append(f"attribute {name!r} is in the database but not in the class")
    for name in new_attrs.keys() & old_attrs.keys():
        for prop in ("type", "in_key", "nullable", "default", "storage"):
            if old_attrs[name].get(prop) != new_attrs[name].get(prop):
                label = {"in_key": "in primary key", "storage": "codec storage"}.get(prop, prop)
                out.append(
                    f"attribute {name!r}: {label} is {old_attrs[name].get(prop)!r} in the database, "
                    f"{new_attrs[name].get(prop)!r} in the class"
                )
    if [a["name"] for a in old.get("attributes", [])] != [a["name"] for a in new.get("attributes", [])] and not out:
        out.append("attributes are in a different order")
    for what in ("foreign_keys", "indexes"):
        if old.get(what) != new.get(what):
            out.append(f"{what.replace('_', ' ')} differ: database {old.get(what)} vs class {new.get(what)}")
    return f"{table}: the definition does not match the table in the database: " + "; ".join(
        out or ["tier or structure differs"]
    )


_DIVIDER = re.compile(r"^-{3,}\s*(#.*)?$")
_FK = re.compile(
    r"^->\s*(?:\[(?P<opts>[^\]]*)\]\s*)?(?P<ref>[A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*)"
    r"\s*(?:\(\s*(?P<args>[^()]*)\))?\s*(?:#.*)?$"
)
_RENAME = re.compile(r"^(?P<new>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<q>['\"])(?P<old>[A-Za-z_][A-Za-z0-9_]*)(?P=q)$")
_INDEX = re.compile(r"^(?P<unique>unique\s+)?index\s*\((?P<attrs>[^)]*)\)\s*(?:#.*)?$", re.IGNORECASE)
_ATTR_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*")


def _split_unquoted(text: str, sep: str) -> tuple[str, str | None]:
    """Split at the first ``sep`` outside single or double quotes."""
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif text.startswith(sep, i):
            return text[:i], text[i + len(sep) :]
        i += 1
    if quote:
        raise ValueError("unterminated quote")
    return text, None


def _parse_default(table: str, attr: Attribute, text: str) -> tuple[Any, bool]:
    """Returns (python default, nullable_by_default)."""
    raw = text.strip()
    if raw.lower() == "null":
        return None, True
    if raw.upper() in (CURRENT_TIMESTAMP, "NOW()"):
        if attr.type.name != "datetime":
            raise DeclarationError(f"{table}.{attr.name}: CURRENT_TIMESTAMP is only a default for datetime")
        return CURRENT_TIMESTAMP, False
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        # a quote inside is escaped with a backslash or doubled (SQL: 'it''s')
        value: Any = raw[1:-1].replace("\\" + raw[0], raw[0]).replace(raw[0] * 2, raw[0])
        if attr.type.name in ("uuid", "date", "datetime", "decimal"):
            pass  # converted from its string form below
    elif raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise DeclarationError(
                    f"{table}.{attr.name}: cannot read default {raw!r} (quote strings)"
                ) from None
    if attr.type.is_blob or attr.type.name == "bytes":
        raise DeclarationError(f"{table}.{attr.name}: blob attributes can only default to null")
    if attr.type.codec is not None:
        raise DeclarationError(f"{table}.{attr.name}: {attr.type} attributes can only default to null")
    try:
        to_sql_value(table, attr, value)
    except DataError as exc:
        raise DeclarationError(f"invalid default: {exc}") from None
    return value, False


def parse_attribute(table: str, line: str, in_key: bool) -> Attribute:
    """Parse ``name [= default] : type [# comment]``."""
    m = _ATTR_NAME.match(line)
    if not m:
        raise DeclarationError(f"{table}: cannot parse line {line!r}")
    name = m.group("name")
    if not IDENTIFIER.fullmatch(name) or len(name) > MAX_IDENTIFIER:
        raise DeclarationError(
            f"{table}: invalid attribute name {name!r}: use lowercase letters, digits and "
            f"underscores, starting with a letter, at most {MAX_IDENTIFIER} characters"
        )
    rest = line[m.end() :]
    try:
        before_comment, comment = _split_unquoted(rest, "#")
        left, type_text = _split_unquoted(before_comment, ":")
    except ValueError as exc:
        raise DeclarationError(f"{table}.{name}: {exc} in {line!r}") from None
    if type_text is None:
        raise DeclarationError(f"{table}.{name}: missing ': type' in {line!r}")
    default_text: str | None = None
    left = left.strip()
    if left:
        if not left.startswith("="):
            raise DeclarationError(f"{table}.{name}: cannot parse {line!r}")
        default_text = left[1:].strip()
        if not default_text:
            raise DeclarationError(f"{table}.{name}: empty default in {line!r}")
    try:
        sql_type = parse_type(type_text)
    except ValueError as exc:
        raise DeclarationError(f"{table}.{name}: {exc}") from None
    attr = Attribute(name=name, type=sql_type, in_key=in_key, comment=(comment or "").strip())
    if default_text is not None:
        default, nullable = _parse_default(table, attr, default_text)
        attr = Attribute(
            name=name,
            type=sql_type,
            in_key=in_key,
            nullable=nullable,
            default=default,
            has_default=True,
            comment=attr.comment,
        )
    if in_key and attr.nullable:
        raise DeclarationError(f"{table}.{name}: primary key attributes cannot be nullable")
    if in_key and (sql_type.name in ("blob", "bytes", "json") or sql_type.codec is not None):
        raise DeclarationError(f"{table}.{name}: {sql_type} cannot be part of the primary key")
    return attr


def _parse_renames(table: str, line: str, args: str, parent: Any) -> dict[str, str]:
    """``new='old', ...`` of ``-> Parent.proj(...)``: ``{parent's attribute: our name}``.

    Only the parent's primary-key attributes can be renamed (they are what a foreign key
    references); the new names are checked like any attribute name."""
    pk = [a.name for a in parent.heading.attributes.values() if a.in_key]
    renames: dict[str, str] = {}
    for item in (x.strip() for x in args.split(",")):
        if not item:
            continue
        m = _RENAME.fullmatch(item)
        if not m:
            raise DeclarationError(
                f"{table}: cannot parse {item!r} in {line!r}: write new_name='parent_attribute'"
            )
        new, old = m.group("new"), m.group("old")
        check_identifier(new, f"{table} attribute")
        if old not in pk:
            raise DeclarationError(
                f"{table}: {line!r} renames {old!r}, which is not in the primary key of "
                f"{parent.full_name} ({', '.join(pk)})"
            )
        if old in renames:
            raise DeclarationError(f"{table}: {line!r} renames {old!r} twice")
        renames[old] = new
    names = [renames.get(a, a) for a in pk]
    if len(set(names)) != len(names):
        raise DeclarationError(f"{table}: {line!r} gives two of {parent.full_name}'s key attributes one name")
    return {old: new for old, new in renames.items() if old != new}


def parse_definition(
    table: str,
    definition: str,
    resolve: Callable[[str], Any],
) -> TableDefinition:
    """Parse a definition string.

    ``resolve(name)`` returns the table class that ``-> name`` refers to (it raises
    :class:`DeclarationError` for unknown names).
    """
    if not isinstance(definition, str):
        raise DeclarationError(f"{table}: definition must be a string")
    if "\x00" in definition:  # PostgreSQL text cannot hold NUL (comments are stored as text)
        raise DeclarationError(f"{table}: the definition contains a NUL character")
    out = TableDefinition(table=table)
    attrs: dict[str, Attribute] = {}
    in_key = True
    seen_divider = False
    first = True
    for raw_line in definition.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if first and not attrs:
                out.comment = line[1:].strip()
            first = False
            continue
        first = False
        if _DIVIDER.match(line):
            if seen_divider:
                raise DeclarationError(f"{table}: more than one '---' divider")
            seen_divider, in_key = True, False
            continue
        if line.startswith("->"):
            m = _FK.match(line)
            if not m:
                raise DeclarationError(f"{table}: cannot parse foreign key {line!r}")
            opts = {o.strip().lower() for o in (m.group("opts") or "").split(",") if o.strip()}
            unknown = opts - {"nullable", "unique"}
            if unknown:
                raise DeclarationError(f"{table}: unknown foreign key option(s) {sorted(unknown)} in {line!r}")
            nullable = "nullable" in opts
            if nullable and in_key:
                raise DeclarationError(f"{table}: a primary-key foreign key cannot be nullable: {line!r}")
            ref = re.sub(r"\s+", "", m.group("ref"))
            args = m.group("args")
            if args is not None:
                if not ref.endswith(".proj") or ref == ".proj":
                    raise DeclarationError(
                        f"{table}: cannot parse foreign key {line!r}: only a table or "
                        "Table.proj(new_name='parent_name', ...) can be referenced"
                    )
                ref = ref[: -len(".proj")]
            parent = resolve(ref)
            renames = _parse_renames(table, line, args or "", parent)
            fk_attrs = []
            parent_attrs = []
            for pattr in parent.heading.attributes.values():
                if not pattr.in_key:
                    continue
                name = renames.get(pattr.name, pattr.name)
                new = Attribute(
                    name=name,
                    type=pattr.type,
                    in_key=in_key,
                    nullable=nullable,
                    default=None,
                    has_default=nullable,
                    comment=pattr.comment,
                    from_parent=parent.full_name,
                )
                if name in attrs:
                    existing = attrs[name]
                    if existing.from_parent is None or existing.type != new.type:
                        raise DeclarationError(
                            f"{table}.{name}: attribute declared twice (also from -> {ref})"
                        )
                else:
                    attrs[name] = new
                fk_attrs.append(name)
                parent_attrs.append(pattr.name)
            if any(fk.parent is parent and fk.attributes == tuple(fk_attrs) for fk in out.foreign_keys):
                raise DeclarationError(f"{table}: duplicate foreign key to {ref}")
            out.foreign_keys.append(
                ForeignKey(parent=parent, attributes=tuple(fk_attrs), in_key=in_key, nullable=nullable,
                           unique="unique" in opts,
                           parent_attributes=tuple(parent_attrs) if renames else ())
            )
            continue
        m = _INDEX.match(line)
        if m:
            names = tuple(a.strip() for a in m.group("attrs").split(",") if a.strip())
            if not names:
                raise DeclarationError(f"{table}: empty index in {line!r}")
            if len(set(names)) != len(names):
                raise DeclarationError(f"{table}: an attribute is repeated in {line!r}")
            out.indexes.append(Index(names, unique=bool(m.group("unique"))))
            continue
        attr = parse_attribute(table, line, in_key)
        if attr.name in attrs:
            raise DeclarationError(f"{table}.{attr.name}: attribute declared twice")
        attrs[attr.name] = attr
    if not any(a.in_key for a in attrs.values()):
        raise DeclarationError(f"{table}: the definition declares no primary key attribute")
    # the primary key comes first, in declaration order, as DataJoint lays it out
    ordered = [a for a in attrs.values() if a.in_key] + [a for a in attrs.values() if not a.in_key]
    out.heading = Heading({a.name: a for a in ordered})
    for ix in out.indexes:
        for name in ix.attributes:
            if name not in attrs:
                raise DeclarationError(f"{table}: index names unknown attribute {name!r}")
    return out

