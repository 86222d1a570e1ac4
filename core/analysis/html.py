"""One self-contained ``report.html``: figures inline (base64 PNG), sortable tables (a few lines of
inline JavaScript, no library), no network access — it opens from disk anywhere.

    page = html.page("Title", [html.section("ranks", "Mean ranks", [html.para("…"), html.table(df)])])
"""
from __future__ import annotations

import base64
import html as _html
import math
from typing import Iterable, Sequence

import pandas as pd

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cfd8dc}nav{padding:8px 28px;background:#eceff1;position:sticky;top:0;z-index:2}
nav a{margin-right:14px;color:#37474f;text-decoration:none;font-weight:600}main{padding:8px 28px 40px}
section{overflow-x:auto;background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px 18px;margin:16px 0}
h2{font-size:18px;margin:6px 0 8px}h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
td.t,th.t{text-align:left}th{background:#f1f3f4;cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}
tbody tr:nth-child(even){background:#fafbfc}img{max-width:100%;height:auto;border:1px solid #eee}
.note{color:#5f6368;font-size:13px}.na{color:#9e9e9e}.warn{color:#b26a00}
.verdict{font-size:16px;font-weight:700}.good{color:#1b5e20}.bad{color:#b71c1c}.neutral{color:#455a64}
details{margin:8px 0}summary{cursor:pointer;color:#37474f;font-weight:600}figure{margin:8px 0}figcaption{color:#5f6368;font-size:12px}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], i = th.cellIndex, asc = th.dataset.dir !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? 'asc' : 'desc';
      function key(row) {
        var c = row.cells[i], v = c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent.trim();
        var n = parseFloat(v);
        return (v !== '' && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase();
      }
      Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b), c;
        if (typeof x === 'number' && typeof y === 'number') c = x - y;
        else if (typeof x === 'number') c = -1;
        else if (typeof y === 'number') c = 1;
        else c = x < y ? -1 : (x > y ? 1 : 0);
        return asc ? c : -c;
      }).forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(text) -> str:
    return _html.escape(str(text), quote=True)


def para(text: str, cls: str = "") -> str:
    return f"<p{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{esc(text)}</p>"


def raw(markup: str) -> str:
    """Trusted markup (built by this module's callers from escaped parts)."""
    return markup


def bullets(items: Iterable[str], cls: str = "") -> str:
    items = list(items)
    if not items:
        return ""
    return f"<ul class='{cls}'>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def figure(png: bytes, alt: str, caption: str = "") -> str:
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt='{esc(alt)}' src='data:image/png;base64,{b64}'>{cap}</figure>"


def _fmt(v, digits: int) -> tuple[str, str, bool]:
    """(shown text, sort value, is numeric)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "n/a", "", False
    if isinstance(v, bool):
        return ("yes" if v else "no"), str(v), False
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return str(int(v)), str(int(v)), True
    if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "f"):
        f = float(v)
        if math.isinf(f):
            return ("∞" if f > 0 else "−∞"), str(f), True
        a = abs(f)
        if a >= 1000:
            text = f"{f:.0f}"
        elif a >= 100:
            text = f"{f:.1f}"
        elif a >= 1 or a == 0:
            text = f"{f:.{min(digits, 3)}f}"
        elif a >= 1e-3:
            text = f"{f:.{digits}f}"
        else:
            text = f"{f:.3g}"
        return text, repr(f), True
    return str(v), str(v), False


def table(df: pd.DataFrame, caption: str = "", digits: int = 4, max_rows: int = 2000) -> str:
    """A sortable HTML table (click a header; numbers sort numerically, 'n/a' last)."""
    if df is None or len(df) == 0:
        return para(f"{caption}: (empty)" if caption else "(empty)", "na")
    df = df.head(max_rows)
    cols = list(df.columns)
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols}
    head = "".join(f"<th class='{'' if numeric[c] else 't'}'>{esc(c)}</th>" for c in cols)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(cols, row):
            text, key, is_num = _fmt(v, digits)
            cls = [] if (is_num or numeric[c]) else ["t"]
            if text == "n/a":
                cls.append("na")
            attr = f" data-v='{esc(key)}'" if is_num else ""
            cells.append(f"<td class='{' '.join(cls)}'{attr}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption class='note' style='caption-side:top;text-align:left'>{esc(caption)}</caption>" if caption else ""
    return (f"<table class='sortable'>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def details(summary: str, content: str) -> str:
    """A collapsed block (long secondary tables)."""
    return f"<details><summary>{esc(summary)}</summary>{content}</details>"


def section(sid: str, title: str, parts: Sequence[str]) -> tuple[str, str, str]:
    return sid, title, "".join(parts)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    nav = "".join(f"<a href='#{esc(s)}'>{esc(t)}</a>" for s, t, _ in sections)
    body = "".join(f"<section id='{esc(s)}'><h2>{esc(t)}</h2>{content}</section>" for s, t, content in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
            f"<main>{body}</main><script>{_JS}</script></body></html>\n")
