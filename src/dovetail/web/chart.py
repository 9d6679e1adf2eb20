"""Line charts as inline SVG (the dashboard's mail flow, the report pages' days): no JavaScript, no chart
library, prints anywhere."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

COLORS = {"received": "#2563eb", "delivered": "#16a34a", "deferred": "#d97706", "bounced": "#dc2626",
          "rejected": "#7c3aed", "passed": "#16a34a", "fail": "#dc2626", "success": "#16a34a",
          "failure": "#dc2626"}


def flow_svg(series: dict[str, list[int]], width: int = 720, height: int = 220, *, title: str = "",
             start_label: str = "", end_label: str = "now", chart_id: str = "flow", dots: bool = False) -> Markup:
    """Lines per counter over the minutes of ``series`` (oldest left), with a y scale and legend.

    Other time steps (days) give their own ``title`` and labels for the first and last point; ``dots``
    marks each point, so a series of one day still shows."""
    pad_l, pad_r, pad_t, pad_b = 40, 10, 10, 40
    minutes = max((len(v) for v in series.values()), default=0)
    peak = max((max(v) for v in series.values() if v), default=0)
    top = max(1, peak)
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(i: int) -> float:
        return pad_l + (plot_w * i / max(1, minutes - 1))

    def y(v: int) -> float:
        return pad_t + plot_h - plot_h * v / top

    title = title or f"Mail flow per minute, last {minutes} minutes"
    start_label = start_label or f"-{minutes} min"
    parts = [f'<svg class="chart" role="img" aria-labelledby="{chart_id}-title" viewBox="0 0 {width} {height}" '
             f'width="100%" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{chart_id}-title">{escape(title)}; peak {peak}</title>']
    for frac in ((0, 0.5, 1) if top >= 4 else (0, 1)):
        gy = pad_t + plot_h * (1 - frac)
        parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{gy + 4:.1f}" text-anchor="end" font-size="11" fill="#6b7280">'
                     f'{round(top * frac)}</text>')
    parts.append(f'<text x="{pad_l}" y="{pad_t + plot_h + 16}" font-size="11" fill="#6b7280">'
                 f'{escape(start_label)}</text>')
    parts.append(f'<text x="{width - pad_r}" y="{pad_t + plot_h + 16}" font-size="11" fill="#6b7280" '
                 f'text-anchor="end">{escape(end_label)}</text>')
    for name, values in series.items():
        color = COLORS.get(name, "#111827")
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}">'
                     f'<title>{escape(name)}: {sum(values)}</title></polyline>')
        if dots:
            parts.extend(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>'
                         for i, v in enumerate(values))
    lx = pad_l
    for name, values in series.items():
        color = COLORS.get(name, "#111827")
        parts.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{color}"/>')
        label = f"{name} {sum(values)}"
        parts.append(f'<text x="{lx + 14}" y="{height - 5}" font-size="12" fill="#111827">{escape(label)}</text>')
        lx += 14 + 8 * len(label) + 16
    parts.append("</svg>")
    return Markup("".join(parts))
