"""The HTML kit of ucfpipe's self-contained pages (a run's report.html, predict --window's report.html).

Everything is inline (CSS, pictures as SVG or base64 JPEG): a page opens from a mail attachment or an
air-gapped machine and asks the network for nothing. Every name reaches a page as text (`escape`), and the
page's JSON is escaped so that no string can close its <script> element (`script_json`). OpenCV loads only
when a thumbnail is made.
"""

from __future__ import annotations

import base64
import html
import json

THUMB_WIDTH = 64  # pixels across a thumbnail


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def script_json(value) -> str:
    """JSON safe inside <script>: no </script>, no <!--, whatever the strings hold."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_page(path, page: str) -> str:
    """`page` into `path` (`-`: standard output), written whole; the line that says where it went and its size
    (two decimals below a MiB, one above)."""
    from ucfpipe.core.destinations import STDOUT
    from ucfpipe.core.files import write_text

    write_text(path, page)
    where = "the page to standard output" if str(path) == STDOUT else str(path)
    mib = len(page.encode("utf-8")) / 2**20
    return f"wrote {where} ({mib:.2f} MiB)" if mib < 1 else f"wrote {where} ({mib:.1f} MiB)"


def jpeg_data_uri(rgb, width: int = THUMB_WIDTH, quality: int = 70) -> str:
    import cv2

    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:12px}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.bar{display:inline-block;height:10px;background:#4a7fc1;vertical-align:middle}
.strip img{margin-right:2px;border:1px solid #ccc}.clip{margin:10px 0;padding:6px;border-left:3px solid #c14a4a}
.grid{overflow:auto;max-width:100%}.grid table{border-collapse:collapse}.grid td{padding:0;border:0}
.grid td.cell{cursor:pointer}.grid td.cell:hover{outline:1px solid #000}
.grid th{font-weight:normal;font-size:10px;padding:0 4px;white-space:nowrap;border:0;text-align:right}
.cellclips{min-height:2em;background:#f6f6f6;padding:6px}
button{margin:6px 0}
"""


def document(title: str, body: str, data: dict, script: str = "") -> str:
    """A whole page: `body`, STYLE, `data` as JSON (id page-data) for `script`; a policy that lets it load nothing."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n"
            f"<script type=\"application/json\" id=\"page-data\">{script_json(data)}</script>\n"
            + (f"<script>{script}</script>" if script else "") + "</body></html>\n")


def line_chart(series: list[tuple], xs: list[float], title: str, y_range=None,
               width: int = 520, height: int = 220, marker: float | None = None, x_label: str = "epoch",
               legend: bool = True) -> str:
    """An SVG line chart: series of (label, values, colour) over `xs`, or (label, values, colour, attributes) whose
    attributes (a dict) go on the line; None values are gaps. `legend`: the labels at the right (else on hover)."""
    left, right, top, bottom = 44, 10, 22, 30
    values = [v for _, ys, *_ in series for v in ys if v is not None]
    if not xs or not values:
        return ""
    low, high = y_range or (min(values), max(values))
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0

    def px(x):
        return left + (x - x0) / span * (width - left - right)

    def py(y):
        return top + (high - y) / (high - low) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="14" font-size="12" font-weight="600">{escape(title)}</text>']
    for fraction in (0, 0.5, 1):
        y = low + fraction * (high - low)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{py(y) + 4:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">'
                 f'{escape(x_label)} ({x0:g}–{x1:g})</text>')
    if marker is not None:
        parts.append(f'<line x1="{px(marker):.1f}" x2="{px(marker):.1f}" y1="{top}" y2="{height - bottom}" stroke="#999" '
                     f'stroke-dasharray="3,3"><title>best epoch {marker:g}</title></line>')
    for number, (label, ys, colour, *more) in enumerate(series):
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys) if y is not None)
        attributes = {"stroke-width": "1.6", **(more[0] if more else {})}
        extra = "".join(f' {name}="{escape(value)}"' for name, value in attributes.items())
        parts.append(f'<polyline fill="none" stroke="{colour}"{extra} points="{points}"><title>{escape(label)}</title></polyline>')
        if legend:
            parts.append(f'<text x="{width - right - 4}" y="{top + 12 * (number + 1)}" font-size="10" text-anchor="end" '
                         f'fill="{colour}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
