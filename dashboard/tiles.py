"""Pure HTML for the ward tiles: one card per patient with a risk sparkline (inline SVG), so the
browser draws small HTML elements instead of hundreds of charts."""
from __future__ import annotations

import base64
import datetime as dt
from html import escape

from dashboard.transforms import TileLook, WardRow, against_threshold, alarm_kind_words, fmt_age, risk_axis_top

# Unmissable: a saturated red tile with a pulsing border for an open alarm; amber when someone
# has it in hand (acknowledged / snoozed); otherwise a coloured left edge for the risk against the
# threshold (transforms.COLOUR_RULE says which).
CSS = """
<style>
.tile{border:2px solid #c8d1dc;border-radius:8px;padding:8px 10px;background:#f7f9fb;color:#1b2733;text-decoration:none}
.tile a{color:inherit;text-decoration:none}
.tile .pid{font-weight:600;font-size:0.95em}
.tile .risk{font-size:1.9em;font-weight:700;line-height:1.1}
.tile .spark{display:block;margin:2px 0}
.tile .meta{font-size:0.8em;color:#44505c}
.tile .badge{display:inline-block;margin-top:4px;padding:2px 8px;border-radius:4px;font-weight:700;font-size:0.85em}
.tile.alarm-open{background:#d50000;border-color:#7f0000;color:#fff;animation:pulse 1.2s infinite}
.tile.alarm-open .meta{color:#ffe5e5}
.tile.alarm-open .badge{background:#fff;color:#d50000}
.tile.alarm-old{background:repeating-linear-gradient(135deg,#ffebee 0 10px,#ffcdd2 10px 20px);border:3px solid #b71c1c}
.tile.alarm-old .badge{background:#b71c1c;color:#fff}
.tile.alarm-held{background:#fff4d6;border-color:#e0a000}
.tile.no-data{border:3px dashed #37474f}
.tile .badge.nodata{background:#37474f;color:#fff}
.tile .badge.realert{background:#4a148c;color:#fff;margin-left:4px}
.tile.alarm-held .badge{background:#e0a000;color:#1b2733}
.tile.risk-high{border-left:8px solid #c62828}
.tile.risk-mid{border-left:8px solid #f9a825}
.tile.risk-none{background:#eceff1;color:#5f6b76}
.tile .badge.treat{background:#1565c0;color:#fff}
.legend{display:flex;flex-wrap:wrap;gap:6px 14px;font-family:sans-serif;font-size:0.8em;color:#44505c;margin:4px 0 8px}
.legend span.sw{display:inline-block;width:14px;height:14px;border-radius:3px;vertical-align:middle;margin-right:4px;border:2px solid #c8d1dc;background:#f7f9fb}
.legend span.sw.alarm-open{background:#d50000;border-color:#7f0000}.legend span.sw.alarm-old{background:repeating-linear-gradient(135deg,#ffebee 0 3px,#ffcdd2 3px 6px);border-color:#b71c1c}.legend span.sw.no-data{border:2px dashed #37474f}.legend span.sw.alarm-held{background:#fff4d6;border-color:#e0a000}
.legend span.sw.risk-high{border-left:6px solid #c62828}.legend span.sw.risk-mid{border-left:6px solid #f9a825}.legend span.sw.risk-none{background:#eceff1}
@keyframes pulse{0%{box-shadow:0 0 0 0 rgba(213,0,0,.7)}70%{box-shadow:0 0 0 10px rgba(213,0,0,0)}100%{box-shadow:0 0 0 0 rgba(213,0,0,0)}}
</style>
"""


def sparkline_svg(points: list[tuple[dt.datetime, float]], threshold: float | None, width: int = 180,
                  height: int = 36, stroke: str = "#1b2733") -> str:
    """Risk over time as an SVG polyline with a dashed threshold line; the vertical scale runs from
    0 to just above the highest risk and the threshold (transforms.risk_axis_top)."""
    if not points:
        return f'<svg width="{width}" height="{height}" role="img" aria-label="no risk yet"></svg>'
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0).total_seconds() or 1.0
    top = risk_axis_top([r for _, r in points], threshold)

    def xy(t: dt.datetime, r: float) -> str:
        x = (t - t0).total_seconds() / span * (width - 4) + 2
        y = (1.0 - min(max(r / top, 0.0), 1.0)) * (height - 4) + 2
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(t, r) for t, r in points)
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="risk trend, {len(points)} points">']
    if threshold is not None:
        y = (1.0 - min(threshold / top, 1.0)) * (height - 4) + 2
        parts.append(f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{stroke}" stroke-opacity="0.5" '
                     'stroke-dasharray="3,3"/>')
    if len(points) == 1:
        x, y = xy(*points[0]).split(",")
        parts.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{stroke}"/>')
    else:
        parts.append(f'<polyline points="{line}" fill="none" stroke="{stroke}" stroke-width="1.8"/>')
    parts.append("</svg>")
    return "".join(parts)


def sparkline_img(points: list[tuple[dt.datetime, float]], threshold: float | None, stroke: str) -> str:
    """The sparkline as an <img> data URI: Streamlit's HTML sanitiser drops inline <svg>."""
    svg = sparkline_svg(points, threshold, stroke=stroke).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    data = base64.b64encode(svg.encode()).decode()
    return (f'<img class="spark" src="data:image/svg+xml;base64,{data}" width="180" height="36" style="max-width:100%" '
            f'alt="risk trend over 24 h, {len(points)} points"/>')


def since_text(h: float | None) -> str:
    """Time since the last measured value, in words that fit a tile."""
    if h is None:
        return "nothing measured yet"
    if h < 1:
        return f"{h * 60:.0f} min since last observation"
    if h < 48:
        return f"{h:.1f} h since last observation"
    return f"{h / 24:.1f} days since last observation"


def tile_html(row: WardRow, trend: list[tuple[dt.datetime, float]], threshold: float | None, look: TileLook,
              unit: str | None) -> str:
    """A tile that shows; the link to the patient page is a Streamlit page link beside it (a plain
    <a href> would reload the whole app and lose the session: the user's name, the filters)."""
    loud = look.css == "alarm-open"
    # one decimal below 10%: the colour compares with thresholds of a few percent, the number must too
    risk = "&ndash;" if row.risk is None else f"{row.risk:.1%}" if row.risk < 0.1 else f"{row.risk:.0%}"
    if look.css in ("alarm-open", "alarm-old"):
        what = "SNOOZE OVER" if row.alarm_state == "snoozed" else "OPEN"
        badge = f'<div class="badge">ALARM &middot; {what}</div>'
        again = alarm_kind_words(row.alarm_kind)
        if again:  # a re-alert looks different from a first alarm: it says why it came back
            badge += f'<div class="badge realert">{escape(again)}</div>'
    elif row.alarm_state == "snoozed" and row.snoozed_until is not None:
        badge = f'<div class="badge">snoozed until {row.snoozed_until:%d %b %H:%M}</div>'
    elif row.alarm_state:
        badge = f'<div class="badge">{escape(row.alarm_state)}</div>'
    else:
        badge = ""
    if row.no_data:
        badge += '<div class="badge nodata">NO RECENT DATA</div>'
    if row.status == "in_treatment":
        badge += '<div class="badge treat">in treatment</div>'
    raised = ""
    if row.alarm_state and row.alarm_risk is not None:
        # the alarm's own risk and age and the risk now against the threshold, so a red tile whose
        # risk has since fallen says why it is red and that the alarm is old
        old = "OLD ALARM: " if row.alarm_old else ""
        raised = (f'<div class="meta">{old}raised at {row.alarm_risk:.1%}, {fmt_age(row.alarm_age_hours)}; '
                  f'risk now {escape(against_threshold(row.risk, threshold))}</div>')
    unit_txt = "".join(f" &middot; {escape(x)}" for x in (row.bed, unit) if x)
    return (f'<div class="tile {look.css}" data-patient="{escape(row.patient_id)}" '
            f'data-alarm="{escape(row.alarm_state or "none")}" data-colour="{look.css}" '
            f'data-nodata="{str(row.no_data).lower()}" title="{escape(look.words)}">'
            f'<div class="pid">{escape(row.patient_id)}{unit_txt}</div>'
            f'<div class="risk">{risk}</div>{sparkline_img(trend, threshold, "#ffffff" if loud else "#1b2733")}'
            f'<div class="meta">{since_text(row.hours_since)} &middot; 24 h trend</div>{raised}{badge}</div>')


def legend_html(rule: list[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><span class="sw {css}"></span>{escape(words)}</span>'
                                            for css, words in rule) + "</div>"
