"""uuid.UUID and datetime date/datetime/time/timedelta values in a blob: fixed-size payloads
(tz-aware values carry a fixed UTC offset in microseconds)."""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any

from mp_dagster.errors import BlobError

from .format import (
    _DATE,
    _DATETIME,
    _I64,
    _T_DATE,
    _T_DATETIME,
    _T_TIME,
    _T_TIMEDELTA,
    _T_UUID,
    _TIME,
    _TIMEDELTA,
    _Buffer,
)


# --- encoding: (obj, out, pos, depth) -> pos ----------------------------------------------
def _enc_uuid(obj: uuid.UUID, out: list, pos: int, depth: int) -> int:
    out.append(bytes([_T_UUID]) + obj.bytes)
    return pos + 17


def _tz_bytes(obj: _dt.datetime | _dt.time) -> tuple[int, bytes]:
    tz = obj.tzinfo
    if tz is None:
        return 0, b""
    if type(tz) is not _dt.timezone:
        raise BlobError(
            f"cannot encode {type(obj).__name__} with tzinfo {tz!r} in a blob: only naive values "
            "and fixed offsets (datetime.timezone) round-trip exactly; convert first, e.g. "
            "value.astimezone(datetime.timezone.utc)"
        )
    offset = tz.utcoffset(None)
    return 1, _I64.pack((offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds)


def _enc_date(obj: _dt.date, out: list, pos: int, depth: int) -> int:
    out.append(bytes([_T_DATE]) + _DATE.pack(obj.year, obj.month, obj.day))
    return pos + 1 + _DATE.size


def _enc_datetime(obj: _dt.datetime, out: list, pos: int, depth: int) -> int:
    has_tz, tz = _tz_bytes(obj)
    raw = _DATETIME.pack(
        obj.year,
        obj.month,
        obj.day,
        obj.hour,
        obj.minute,
        obj.second,
        obj.microsecond,
        obj.fold,
        has_tz,
    )
    out.append(bytes([_T_DATETIME]) + raw + tz)
    return pos + 1 + len(raw) + len(tz)


def _enc_time(obj: _dt.time, out: list, pos: int, depth: int) -> int:
    has_tz, tz = _tz_bytes(obj)
    raw = _TIME.pack(obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold, has_tz)
    out.append(bytes([_T_TIME]) + raw + tz)
    return pos + 1 + len(raw) + len(tz)


def _enc_timedelta(obj: _dt.timedelta, out: list, pos: int, depth: int) -> int:
    out.append(bytes([_T_TIMEDELTA]) + _TIMEDELTA.pack(obj.days, obj.seconds, obj.microseconds))
    return pos + 1 + _TIMEDELTA.size


# --- decoding: (buf, pos, depth, copy) -> (value, pos) ------------------------------------
def _dec_uuid(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    end = pos + 16
    if end > len(buf):
        raise BlobError("truncated blob (uuid)")
    return uuid.UUID(bytes=bytes(buf[pos:end])), end


def _read_tz(buf: _Buffer, pos: int, has_tz: int) -> tuple[_dt.timezone | None, int]:
    if has_tz == 0:
        return None, pos
    if has_tz != 1:
        raise BlobError("corrupt blob: bad timezone flag")
    (us,) = _I64.unpack_from(buf, pos)
    if not -86_400_000_000 < us < 86_400_000_000:
        raise BlobError("corrupt blob: timezone offset out of range")
    return _dt.timezone(_dt.timedelta(microseconds=us)), pos + 8


def _dec_date(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    y, m, d = _DATE.unpack_from(buf, pos)
    return _dt.date(y, m, d), pos + _DATE.size


def _dec_datetime(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    y, mo, d, h, mi, s, us, fold, has_tz = _DATETIME.unpack_from(buf, pos)
    tz, pos = _read_tz(buf, pos + _DATETIME.size, has_tz)
    return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=tz, fold=fold), pos


def _dec_time(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    h, mi, s, us, fold, has_tz = _TIME.unpack_from(buf, pos)
    tz, pos = _read_tz(buf, pos + _TIME.size, has_tz)
    return _dt.time(h, mi, s, us, tzinfo=tz, fold=fold), pos


def _dec_timedelta(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    days, seconds, us = _TIMEDELTA.unpack_from(buf, pos)
    if seconds >= 86400 or us >= 1_000_000:
        raise BlobError("corrupt blob: timedelta fields out of range")
    return _dt.timedelta(days, seconds, us), pos + _TIMEDELTA.size
