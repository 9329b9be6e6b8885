"""The notebook preview of a table or query (``_repr_html_``): its first rows and its row count.

Blobs and other large values are summarised (``array float64 (64, 64)``, ``bytes (1024)``,
``dict (3)``), long text is cut, and everything is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .expression import QueryExpression

PREVIEW_ROWS = 12  # as DataJoint's display.limit
_MAX_TEXT = 60

_STYLE = (
    "<style>.mp-preview table{border-collapse:collapse;font-size:12px}"
    ".mp-preview th,.mp-preview td{border:1px solid #ddd;padding:2px 6px;text-align:left}"
    ".mp-preview th.key{text-decoration:underline}.mp-preview .count{color:#555;margin-top:4px}</style>"
)


def summarize(value: Any) -> str:
    """A short text for one value in the preview (not escaped yet)."""
    if value is None:
        return "NULL"
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {tuple(value.shape)}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"bytes ({len(value)})"
    if isinstance(value, (list, tuple, dict, set)):
        return f"{type(value).__name__} ({len(value)})"
    if isinstance(value, (np.generic, int, float, str)) or hasattr(value, "isoformat"):
        text = str(value)
    else:
        text = type(value).__name__
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def html_preview(expr: QueryExpression, rows: int = PREVIEW_ROWS) -> str:
    """An HTML table of ``expr``'s first ``rows`` rows (primary key underlined) and its count."""
    esc = html.escape
    try:
        heading = expr.heading
        fetched = expr.fetch(as_dict=True, limit=rows)
        total = len(expr)
    except Exception as exc:  # noqa: BLE001 - a preview shows the problem rather than raising
        return f'<div class="mp-preview"><b>{esc(expr.name)}</b>: {esc(type(exc).__name__)}: {esc(str(exc))}</div>'
    names = heading.names
    header = "".join(
        f'<th class="key" title="{esc(str(heading[n].type))} (primary key)">{esc(n)}</th>' if heading[n].in_key
        else f'<th title="{esc(str(heading[n].type))}">{esc(n)}</th>'
        for n in names)
    body = "".join("<tr>" + "".join(f"<td>{esc(summarize(r[n]))}</td>" for n in names) + "</tr>" for r in fetched)
    more = f" (showing the first {len(fetched)})" if total > len(fetched) else ""
    return (f'{_STYLE}<div class="mp-preview"><div><b>{esc(expr.name)}</b></div>'
            f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"
            f'<div class="count">Total: {total} row{"s" if total != 1 else ""}{more}</div></div>')
