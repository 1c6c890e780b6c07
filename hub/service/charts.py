"""Small charts as self-contained SVG text (no plotting library): bars, grouped bars and
lines. Used by the dashboard pages, the HTML report and (as images) the PDF report.

Every label is XML-escaped; sizes are in SVG user units (pixels at 100 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from xml.sax.saxutils import escape

__all__ = ["PALETTE", "bar_chart", "line_chart", "stacked_bars"]

PALETTE = (
    "#2563eb",
    "#16a34a",
    "#f59e0b",
    "#dc2626",
    "#7c3aed",
    "#0891b2",
    "#db2777",
    "#65a30d",
    "#ea580c",
    "#475569",
)

Number = int | float | Decimal


def _fmt(v: Number) -> str:
    if isinstance(v, int):
        return str(v)
    d = Decimal(str(v))
    return f"{d:.4f}".rstrip("0").rstrip(".") if d % 1 else str(int(d))


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
        f'<text x="8" y="16" font-size="13" font-weight="bold">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def bar_chart(
    values: Mapping[str, Number],
    *,
    title: str,
    width: int = 520,
    height: int = 240,
    color: str = PALETTE[0],
    percent: bool = False,
) -> str:
    """One bar per key; ``percent`` shows values (fractions) as percentages."""
    body: list[str] = []
    items = list(values.items())
    left, top, bottom = 40, 40, 40
    plot_h = height - top - bottom
    top_value = max([float(v) for _, v in items] + [0.0]) or 1.0
    if percent:
        top_value = max(top_value, 1.0)
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" '
        'stroke="#94a3b8"/>'
    )
    if items:
        slot = (width - left - 8) / len(items)
        bar_w = max(2.0, slot * 0.7)
        for i, (label, v) in enumerate(items):
            h = plot_h * float(v) / top_value
            x = left + i * slot + (slot - bar_w) / 2
            y = top + plot_h - h
            shown = f"{float(v) * 100:.1f}%" if percent else _fmt(v)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{escape(label)}: {escape(shown)}</title></rect>'
            )
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                f"{escape(shown)}</text>"
            )
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                f"{escape(label[:14])}</text>"
            )
    else:
        body.append(f'<text x="{left}" y="{top + 20}">no data</text>')
    return _svg(width, height, body, title)


def stacked_bars(
    rows: Mapping[str, Mapping[str, Number]],
    *,
    title: str,
    width: int = 520,
    height: int = 260,
) -> str:
    """One bar per row key, stacked by the inner keys (e.g. country -> lifecycle -> cases),
    with a legend."""
    series = sorted({k for inner in rows.values() for k in inner})
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}
    left, top, bottom = 40, 40, 56
    plot_h = height - top - bottom
    totals = {k: sum(float(v) for v in inner.values()) for k, inner in rows.items()}
    top_value = max([*totals.values(), 0.0]) or 1.0
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" '
        'stroke="#94a3b8"/>'
    ]
    if rows:
        slot = (width - left - 8) / len(rows)
        bar_w = max(2.0, slot * 0.7)
        for i, (label, inner) in enumerate(rows.items()):
            x = left + i * slot + (slot - bar_w) / 2
            y = float(top + plot_h)
            for s in series:
                v = float(inner.get(s, 0))
                if not v:
                    continue
                h = plot_h * v / top_value
                y -= h
                body.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                    f'fill="{colors[s]}"><title>{escape(label)} {escape(s)}: '
                    f"{_fmt(inner[s])}</title></rect>"
                )
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                f"{_fmt(totals[label])}</text>"
            )
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                f"{escape(label[:14])}</text>"
            )
    else:
        body.append(f'<text x="{left}" y="{top + 20}">no data</text>')
    body.extend(_legend(series, colors, x=left, y=height - 18, width=width))
    return _svg(width, height, body, title)


def line_chart(
    lines: Mapping[str, Sequence[Number | None]],
    *,
    title: str,
    x_label: str = "",
    width: int = 520,
    height: int = 260,
    percent: bool = True,
) -> str:
    """One polyline per key over x = 0, 1, 2, ...; ``None`` points are skipped."""
    left, top, bottom = 44, 36, 60
    plot_w, plot_h = width - left - 12, height - top - bottom
    n = max([len(v) for v in lines.values()] + [1])
    top_value = max([float(p) for v in lines.values() for p in v if p is not None] + [0.0])
    top_value = max(top_value, 1.0) if percent else (top_value or 1.0)
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#94a3b8"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#94a3b8"/>',
    ]
    for frac in (0.5, 1.0):
        y = top + plot_h - plot_h * frac
        label = f"{top_value * frac * 100:.0f}%" if percent else _fmt(top_value * frac)
        body.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    step = plot_w / max(n - 1, 1)
    for i in range(n):
        body.append(
            f'<text x="{left + i * step:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
            f"{i}</text>"
        )
    if x_label:
        body.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 28}" text-anchor="middle">'
            f"{escape(x_label)}</text>"
        )
    colors = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(lines)}
    for key, values in lines.items():
        points = [
            (left + i * step, top + plot_h - plot_h * float(v) / top_value)
            for i, v in enumerate(values)
            if v is not None
        ]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(
            f'<polyline points="{path}" fill="none" stroke="{colors[key]}" stroke-width="2">'
            f"<title>{escape(key)}</title></polyline>"
        )
        for x, y in points:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colors[key]}"/>')
    if not lines:
        body.append(f'<text x="{left + 8}" y="{top + 20}">no data</text>')
    body.extend(_legend(list(lines), colors, x=left, y=height - 14, width=width))
    return _svg(width, height, body, title)


def _legend(
    keys: Sequence[str], colors: Mapping[str, str], *, x: int, y: int, width: int
) -> list[str]:
    out = []
    cx, cy = x, y
    for k in keys:
        w = 18 + 7 * len(k[:20])
        if cx + w > width:
            cx, cy = x, cy + 0  # one line: long legends are clipped rather than overlap
            break
        out.append(f'<rect x="{cx}" y="{cy - 8}" width="10" height="10" fill="{colors[k]}"/>')
        out.append(f'<text x="{cx + 13}" y="{cy + 1}">{escape(k[:20])}</text>')
        cx += w
    return out
