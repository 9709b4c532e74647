"""report.html: one self-contained page per evaluated run (or several runs side by side) that people browse.

Everything is inline (CSS, a few lines of plain JavaScript, pictures as SVG or base64 JPEG): the page opens
from a mail attachment or an air-gapped machine and asks the network for nothing. Charts are SVG written
here and the confusion matrix a table the script builds from the page's JSON: a plotting library would add
hundreds of kilobytes of JavaScript per page for two line charts and one grid. Every name (classes, videos,
folders, settings) reaches the page as text: html.escape on the server side, textContent in the script,
and the JSON is escaped so that no string can close its <script> element.

What a run's page needs beyond metrics.json is written by `eval` (CLIPS_FILE): per test clip its video,
true class, top-3 and the frame indices stage one sampled, from which the thumbnails are decoded.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np

from ucfpipe.cache.format import Source
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.html import document, escape, jpeg_data_uri, line_chart, write_page
from ucfpipe.stage_two import runs, setups
from ucfpipe.stage_two.metrics import top_k, top_k_title

PAGE = "report.html"
CLIPS_FILE = "test_clips.json"  # what eval records for the page: see module docstring
CLIPS_FORMAT = "ucfpipe-test-clips/1"
CLIP_FIELDS = {"id": "text", "video": "text", "true": "an integer", "top": "a list", "frames": "a list",
               "source?": "an object", "source.size": "an integer", "source.mtime_ns": "an integer", "source.digest": "text"}
HEADLINE = (("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class acc."), ("macro_f1", "macro F1"),
            ("order_blind_top1", "order-blind top-1"))
STRIPS = 40  # misclassified clips per run shown with frames; the rest are listed as text (page size)
STRIPS_PER_PAGE = 120  # with several runs on one page, their strips share this
STRIP_FRAMES = 8  # thumbnails per strip, spread over the stored frame indices
FIRST_SHOWN = 12  # misclassified clips visible before "show more"




# -- pieces of a page ---------------------------------------------------------------------------------------
SCRIPT = """
(function(){
  'use strict';
  var data = JSON.parse(document.getElementById('page-data').textContent);
  function el(tag, text){ var e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }
  data.runs.forEach(function(run, r){
    var holder = document.getElementById('confusion-' + r);
    if (!holder || !run.confusion) return;
    var classes = run.classes, m = run.confusion, k = classes.length;
    var size = k > 40 ? 7 : k > 15 ? 14 : 28, max = 0;
    for (var i = 0; i < k; i++) for (var j = 0; j < k; j++) if (i !== j && m[i][j] > max) max = m[i][j];
    var table = el('table'), list = document.getElementById('cellclips-' + r);
    for (var i = 0; i < k; i++) {
      var row = el('tr'), head = el('th', classes[i]);
      head.style.fontSize = size < 10 ? '7px' : '10px'; head.style.lineHeight = size + 'px';
      row.appendChild(head);
      var total = 0; for (var j = 0; j < k; j++) total += m[i][j];
      for (var j = 0; j < k; j++) {
        var td = el('td'), n = m[i][j];
        td.className = 'cell'; td.style.width = td.style.height = size + 'px';
        td.style.minWidth = size + 'px';
        var share = total ? n / total : 0, level = Math.sqrt(share);
        td.style.background = n === 0 ? '#fff' : (i === j ? 'rgba(40,110,200,' + (0.2 + 0.8 * level) + ')'
                                                          : 'rgba(200,60,40,' + (0.25 + 0.75 * Math.sqrt(n / max)) + ')');
        td.dataset.t = i; td.dataset.p = j;
        if (size >= 28 && n) { td.textContent = n; td.style.cssText += ';font-size:10px;text-align:center;color:#fff'; }
        td.title = 'true: ' + classes[i] + '\\npredicted: ' + classes[j] + '\\n' + n + (n === 1 ? ' clip' : ' clips');
        td.addEventListener('click', function(){
          var t = +this.dataset.t, p = +this.dataset.p;
          list.textContent = '';
          var clips = run.clips.filter(function(c){ return c.t === t && c.p === p; });
          list.appendChild(el('div', 'true ' + classes[t] + ', predicted ' + classes[p] + ': ' + clips.length +
                                     (clips.length === 1 ? ' clip' : ' clips')));
          var ul = el('ul');
          clips.forEach(function(c){ var li = el('li', c.id + '  (' + (100 * c.q).toFixed(1) + '%)'); li.className = 'cellclip'; ul.appendChild(li); });
          list.appendChild(ul);
        });
        row.appendChild(td);
      }
      table.appendChild(row);
    }
    holder.appendChild(table);
  });
  Array.prototype.forEach.call(document.querySelectorAll('button.more'), function(button){
    button.addEventListener('click', function(){
      var hidden = document.querySelectorAll('#' + button.dataset.list + ' > .clip[hidden]');
      for (var i = 0; i < hidden.length && i < 24; i++) hidden[i].hidden = false;
      if (hidden.length <= 24) button.hidden = true;
    });
  });
})();
"""


def key_values(title: str, values: dict) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(json.dumps(v) if isinstance(v, (dict, list)) else v)}</td></tr>"
                   for k, v in values.items())
    return f"<details><summary>{escape(title)}</summary><table>{rows}</table></details>"


# -- a run's data -------------------------------------------------------------------------------------------
def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _recorded(directory: Path) -> tuple[runs.Run | None, Path]:
    """The run (an ensemble's first member speaks for it) and the directory holding it; None when there is none."""
    for folder in [directory, *sorted(p.parent for p in directory.glob(f"*/{runs.RUN}"))]:
        if (folder / runs.RUN).is_file():
            return runs.Run(folder), folder
    return None, directory


def load_run(directory: str | Path) -> dict:
    """What the page shows of one evaluated run, read from its files."""
    directory = Path(directory)
    metrics = runs.read_metrics(directory)
    recorded, holder = _recorded(directory)
    clips = _page_clips(directory / CLIPS_FILE)
    return {"directory": directory, "name": str(directory), "metrics": metrics, "recorded": recorded,
            "history": _read_csv(holder / runs.HISTORY), "per_class": _per_class_rows(directory),
            "clips": clips, "setup": setups.of_run(directory, metrics)}


def _per_class_rows(directory: Path) -> list[dict]:
    """per_class.csv, checked: every row names its class, test clips and a numeric accuracy."""
    rows = _read_csv(directory / runs.PER_CLASS)
    for row in rows:
        if row.get("class") is None or row.get("support") is None or _number(row.get("accuracy")) is None:
            raise UcfpipeError(f"{directory / runs.PER_CLASS} has a row without class, accuracy (a number) and support "
                               f"({row}); rerun `ucfpipe eval --run {directory}` to rewrite it")
    return rows


def _page_clips(path: Path) -> dict | None:
    """test_clips.json, checked; None when eval wrote none (or an older format)."""
    if not path.is_file():
        return None
    fix = f"rerun `ucfpipe eval --run {path.parent}` to rewrite it"
    clips = runs.read_json(path, {"format": "text"}, fix)
    if clips["format"] != CLIPS_FORMAT:
        return None
    runs.check_shape(path, clips, {"videos": "text", "clips": "a list"}, fix)
    for clip in clips["clips"]:
        runs.check_shape(path, clip, CLIP_FIELDS, fix)
    return clips


def _confusion(clips: dict, k: int) -> list[list[int]]:
    matrix = np.zeros((k, k), dtype=np.int64)
    for clip in clips["clips"]:
        matrix[clip["true"], clip["top"][0][0]] += 1
    return matrix.tolist()


def misclassified(clips: dict, confusion: list[list[int]]) -> list[dict]:
    """Wrong clips, worst confusions first: by the clip count of their (true, predicted) cell, then by how sure
    the model was of the wrong class."""
    wrong = [c for c in clips["clips"] if c["top"][0][0] != c["true"]]
    return sorted(wrong, key=lambda c: (-confusion[c["true"]][c["top"][0][0]], c["true"], c["top"][0][0], -c["top"][0][1], c["id"]))


def _strip(clip: dict, videos: Path | None) -> str:
    from ucfpipe.video.decode import read_frames

    if videos is None:
        return ""
    recorded = clip.get("source")  # evals before sources were recorded cannot tell
    if recorded and (how := Source(clip["video"], recorded["size"], recorded["mtime_ns"], recorded["digest"]).change(videos)):
        return (f'<div class="note changed">the video changed since its features were extracted ({escape(how)}): no frames, '
                "they would not be what the model saw; extract again and rerun `ucfpipe eval` to score it as it is now</div>")
    indices = clip["frames"]
    if len(indices) > STRIP_FRAMES:
        indices = [indices[i] for i in np.linspace(0, len(indices) - 1, STRIP_FRAMES).round().astype(int)]
    try:
        frames = read_frames(videos / clip["video"], indices)
    except UcfpipeError:
        return '<div class="note">video not readable now: no frames</div>'
    images = "".join(f'<img alt="frame {i}" title="frame {i}" src="{jpeg_data_uri(frames[i])}">' for i in indices if i in frames)
    return f'<div class="strip">{images}</div>'


def _videos_root(clips: dict) -> Path | None:
    root = Path(clips.get("videos") or "")
    return root if clips.get("videos") and root.is_dir() else None


# -- the page -----------------------------------------------------------------------------------------------
def _titles(rows: list[dict]) -> dict:
    """The headline's column titles, top-5's with the k the runs used."""
    ks = [top_k(row["metrics"], row["setup"]["classes"]) for row in rows]
    return {key: top_k_title(ks) if key == "top5" else title for key, title in HEADLINE}


def _headline(rows: list[dict]) -> str:
    titles = _titles(rows)
    columns = [(key, titles[key]) for key, _ in HEADLINE if all(key in row["metrics"] for row in rows)]
    apart = setups.verdict([(row["name"], row["setup"]) for row in rows])
    head = "<tr><th>run</th><th class=n>split</th>" + "".join(f"<th class=n>{escape(t)}</th>" for _, t in columns) + "<th class=n>test clips</th></tr>"
    body = []
    for number, row in enumerate(rows):
        m = row["metrics"]
        cells = "".join(f'<td class=n data-run="{number}" data-metric="{key}">{m[key]:.4f}</td>' for key, _ in columns)
        body.append(f"<tr><td>{escape(row['name'])}</td><td class=n>{escape(m.get('split', ''))}</td>{cells}"
                    f"<td class=n>{escape(m.get('num_test_clips', ''))}</td></tr>")
    if apart:  # e.g. the protocol's LSTM, + views and ensemble side by side
        body.append(f'<tr><td colspan="{len(columns) + 3}" class="note" id="no-mean">{escape(apart)}</td></tr>')
    elif len(rows) > 1:
        cells = ""
        for key, _ in columns:
            values = [row["metrics"][key] for row in rows]
            mean, std = statistics.fmean(values), statistics.stdev(values)
            cells += f'<td class=n data-metric="{key}" data-mean="{mean:.4f}">{mean:.4f} ± {std:.4f}</td>'
        body.append(f"<tr><th>mean ± std</th><td></td>{cells}<td class=n>over {len(rows)} runs</td></tr>")
    return f'<table id="headline">{head}{"".join(body)}</table>'


def _curves(history: list[dict], best) -> str:
    if not history:
        return '<p class="note">no history.csv: no training curves</p>'
    epochs = [_number(r.get("epoch")) for r in history]
    charts = []
    for metric, y_range in (("loss", None), ("accuracy", (0.0, 1.0))):
        series = [(f"train {metric}", [_number(r.get(metric)) for r in history], "#1f77b4"),
                  (f"validation {metric}", [_number(r.get("val_" + metric)) for r in history], "#ff7f0e")]
        charts.append(line_chart([s for s in series if any(v is not None for v in s[1])], epochs, metric,
                                 y_range=y_range, marker=best))
    return "".join(charts)


def _per_class(rows: list[dict]) -> str:
    ordered = sorted(rows, key=lambda r: (float(r["accuracy"]), r["class"]))
    body = "".join(f'<tr class="pc"><td>{escape(r["class"])}</td><td class=n>{float(r["accuracy"]):.3f}</td>'
                   f'<td><span class="bar" style="width:{float(r["accuracy"]) * 200:.0f}px"></span></td>'
                   f'<td class=n>{escape(r["support"])}</td></tr>' for r in ordered)
    return f'<table><tr><th>class (worst first)</th><th class=n>accuracy</th><th></th><th class=n>test clips</th></tr>{body}</table>'


def _misclassified(number: int, run: dict, classes: list[str], confusion, log, strips: int = STRIPS) -> str:
    clips = run["clips"]
    wrong = misclassified(clips, confusion)
    if not wrong:
        return "<p>no misclassified clips</p>"
    videos = _videos_root(clips)
    note = ("" if videos is not None else
            f'<p class="note" id="no-videos-{number}">the videos are not on disk at {escape(clips.get("videos") or "(unknown)")}: '
            "the clips are listed without frames</p>")
    items = []
    for position, clip in enumerate(wrong):
        top = "".join(f"<li>{escape(classes[c])} <span class=n>{p:.3f}</span></li>" for c, p in clip["top"])
        strip = _strip(clip, videos) if position < strips else ""
        hidden = " hidden" if position >= FIRST_SHOWN else ""
        items.append(f'<div class="clip"{hidden}><div><b>{escape(clip["id"])}</b>: true <b>{escape(classes[clip["true"]])}</b>'
                     f"</div>{strip}<ol>{top}</ol></div>")
    more = (f'<button class="more" data-list="wrong-{number}">show more ({len(wrong) - FIRST_SHOWN} hidden)</button>'
            if len(wrong) > FIRST_SHOWN else "")
    frames_note = (f'<p class="note">frames for the first {strips} of {len(wrong)}; the rest as text '
                   "(every prediction is in predictions.csv)</p>" if videos is not None and len(wrong) > strips else "")
    return f'{note}{frames_note}<div id="wrong-{number}">{"".join(items)}</div>{more}'


def _run_section(number: int, run: dict, log, strips: int = STRIPS) -> tuple[str, dict]:
    metrics, recorded = run["metrics"], run["recorded"]
    classes = list((recorded and recorded.classes) or [r["class"] for r in run["per_class"]])
    parts = [f'<h2 id="run-{number}">{escape(run["name"])}</h2>']
    provenance = {"dataset": metrics.get("dataset"), "split": metrics.get("split"), "backbone": metrics.get("backbone"),
                  "fingerprint": metrics.get("fingerprint"), "features": metrics.get("features"),
                  "splits": metrics.get("splits_dir"), "evaluated": metrics.get("evaluated"),
                  "best epoch": metrics.get("best_epoch")}
    parts.append(f'<p>fingerprint <code>{escape(metrics.get("fingerprint", ""))}</code>, '
                 f'{escape(metrics.get("num_test_clips", ""))} test clips</p>')
    parts.append(key_values("run", provenance))
    parts.append(key_values("settings (config.json)", recorded.settings if recorded else {}))
    parts.append(key_values("data (run.json)", recorded.data if recorded else {}))
    parts.append(key_values("stage one (extract settings)", recorded.extract_config if recorded else {}))
    parts.append(key_values("versions", recorded.versions if recorded else {}))
    parts.append("<h3>training curves</h3>" + _curves(run["history"], recorded and recorded.best_epoch))
    data = {"name": run["name"], "classes": classes}
    if run["clips"] is None:
        parts.append('<p class="note">this run was evaluated before eval recorded its clips (test_clips.json): '
                     "rerun `ucfpipe eval` for the confusion matrix and the misclassified clips</p>")
    else:
        confusion = _confusion(run["clips"], len(classes))
        data.update(confusion=confusion, clips=[{"id": c["id"], "t": c["true"], "p": c["top"][0][0], "q": round(c["top"][0][1], 4)}
                                                for c in run["clips"]["clips"]])
        parts.append("<h3>confusion matrix</h3><p class=note>rows: true class, columns: predicted (in the same order); "
                     "hover a cell for its count, click it for its clips</p>"
                     f'<div class="grid" id="confusion-{number}"></div><div class="cellclips" id="cellclips-{number}"></div>')
        parts.append("<h3>misclassified clips, worst confusions first</h3>" + _misclassified(number, run, classes, confusion, log, strips))
    if run["per_class"]:
        parts.append("<h3>per-class accuracy</h3>" + _per_class(run["per_class"]))
    return "\n".join(parts), data


def render(run_dirs, log=print, before: str = "") -> str:
    rows = [load_run(d) for d in run_dirs]
    if not rows:
        raise UcfpipeError("no run directories given")
    sections, data = [], []
    for number, row in enumerate(rows):
        section, run_data = _run_section(number, row, log, min(STRIPS, max(8, STRIPS_PER_PAGE // len(rows))))
        sections.append(section)
        data.append(run_data)
    datasets = sorted({str(r["metrics"].get("dataset")) for r in rows})
    title = f"ucfpipe report: {', '.join(datasets)}, {len(rows)} run{'s' if len(rows) > 1 else ''}"
    body = (f"<h1>{escape(title)}</h1>" + before + _headline(rows) +
            f'<p class="note">top-1 and {_titles(rows)["top5"]}: share of test clips; mean class accuracy: mean of per-class recall; '
            "order-blind: logistic regression on time-averaged features (eval --baseline)</p>" + "".join(sections))
    return document(title, body, {"runs": data}, SCRIPT)


def write(run_dirs, path: str | Path, log=print, before: str = "") -> str:
    """The page of `run_dirs` into `path` (`-`: standard output), written whole; `before`: HTML placed above the
    headline table. Returns the line that says where it went and how big it is."""
    return write_page(path, render(run_dirs, log, before))
