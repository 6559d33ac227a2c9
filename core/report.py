"""A self-contained HTML report of a run: what a data scientist sends to the business.

Headline numbers, training curves, the confusion matrix, the per-class table, calibration and a
few correct and wrong test images. Charts are inline SVG (rendered by vl-convert, no JavaScript)
and thumbnails are embedded as base64: the file opens anywhere with no network.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd
import vl_convert as vlc

from . import charts
from .errors import NotFound
from .rundir import RunDir
from .runs import RunStore
from .storage import write_text
from .thumbs import thumbnail

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}.sub{color:#666}.tiles{display:flex;gap:1em;flex-wrap:wrap;margin:1.5em 0}
.tile{border:1px solid #ddd;border-radius:8px;padding:.8em 1.2em;min-width:130px}
.tile b{display:block;font-size:1.6em}table{border-collapse:collapse;margin:1em 0}
td,th{border-bottom:1px solid #eee;padding:.3em .8em;text-align:right}th{background:#f6f6f6}
td:first-child,th:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0;width:150px;font-size:.8em}figure img{width:150px;border-radius:4px}
.ok{border:3px solid #2a9d3a}.bad{border:3px solid #d62828}"""


def _svg(chart) -> str:
    return vlc.vegalite_to_svg(chart.to_dict())


def _tile(label: str, value: str) -> str:
    return f'<div class="tile">{html.escape(label)}<b>{html.escape(value)}</b></div>'


def _examples(rows: pd.DataFrame, root: Path, correct: bool) -> str:
    figures = []
    for row in rows.itertuples():
        data = thumbnail(root / row.path, getattr(row, "sha1", "") or row.path.replace("/", "_"))
        if not data:
            continue
        src = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        caption = f"true {html.escape(str(row.label))}<br>pred {html.escape(str(row.predicted))} ({row.confidence:.0%})"
        figures.append(f'<figure><img class="{"ok" if correct else "bad"}" src="{src}"><figcaption>'
                       f'{caption}</figcaption></figure>')
    return '<div class="grid">' + "".join(figures) + "</div>"


def build(run_dir: str | Path, examples: int = 8) -> str:
    """The report's HTML text for the run in `run_dir` (evaluated first if needed)."""
    run = RunDir(run_dir)
    if run.metrics() is None:
        from .evaluate import evaluate_run

        evaluate_run(run)
    metrics, card = run.metrics(), run.card()
    store = RunStore.open(run.path.parent)
    try:
        name = store.get(run.id)["name"]
        epochs = store.epochs(run.id)
    except NotFound:
        epochs, name = pd.DataFrame(), run.id
    preds = run.predictions()
    manifest = run.manifest().manifest
    preds = preds.merge(manifest[["path", "sha1"]], on="path", how="left")
    root = card.data_root
    tiles = [_tile("test accuracy" if metrics["split"] == "test" else "val accuracy", f"{metrics['accuracy']:.1%}"),
             _tile("balanced accuracy", f"{metrics['balanced_accuracy']:.1%}"),
             _tile("macro F1", f"{metrics['macro_f1']:.3f}"),
             _tile(f"top-{metrics['top_k']} accuracy", f"{metrics['top_k_accuracy']:.1%}"),
             _tile(f"{metrics['split']} images", str(metrics["n"]))]
    if "tta" in metrics:
        tiles.append(_tile(f"TTA accuracy ({metrics['tta']['views']} views)", f"{metrics['tta']['accuracy']:.1%}"))
    per_class = pd.DataFrame(metrics["per_class"])[["class", "accuracy", "precision", "recall", "f1", "support",
                                                     "train_count"]]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)} — Graft report</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{html.escape(name)}</h1><p class='sub'>{html.escape(card.backbone)} · "
             f"{card.num_classes} classes · trained on {html.escape(str(root))}</p>",
             f"<div class='tiles'>{''.join(tiles)}</div>"]
    if len(epochs):
        parts.append("<h2>Training curves</h2>" + _svg(charts.curves(epochs)))
    parts.append("<h2>Confusion matrix</h2>" + _svg(charts.confusion(metrics)))
    if metrics["most_confused"]:
        parts.append("<p>Most confused: " + "; ".join(
            f"{html.escape(p['true'])} → {html.escape(p['predicted'])} ({p['count']})"
            for p in metrics["most_confused"][:5]) + "</p>")
    parts.append("<h2>Per class</h2>" + _svg(charts.per_class(metrics))
                 + per_class.to_html(index=False, float_format=lambda v: f"{v:.3f}"))
    parts.append("<h2>Calibration</h2>" + _svg(charts.reliability(metrics["calibration"])))
    right = preds[preds["correct"].astype(str) == "True"].sort_values("confidence", ascending=False).head(examples)
    wrong = preds[preds["correct"].astype(str) != "True"].sort_values("loss", ascending=False).head(examples)
    parts.append("<h2>Correct examples</h2>" + _examples(right, root, True))
    parts.append("<h2>Mistakes (highest loss first)</h2>" + _examples(wrong, root, False))
    parts.append("</body></html>")
    return "\n".join(parts)


def write(run_dir: str | Path, out: str | Path | None = None) -> Path:
    out = Path(out) if out else RunDir(run_dir).report_file
    write_text(out, build(run_dir))
    return out
