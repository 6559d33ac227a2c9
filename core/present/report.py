"""A self-contained HTML report of a run: what a data scientist sends to the business.

Headline numbers, training curves, the confusion matrix, the per-class table, calibration and a
few correct and wrong test images. Charts are inline SVG (rendered by vl-convert, no JavaScript)
and thumbnails are embedded as base64: the file opens anywhere with no network.
"""
from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
import vl_convert as vlc

from core.base.errors import NotFound
from core.base.storage import write_text
from core.data.notes import display_names, load_class_notes, relabel_metrics, relabel_predictions
from core.data.thumbs import thumbnail
from core.models.choices import backbone_title
from core.present import charts
from core.present.words import accuracy_sentence, chance, percent
from core.runs.folder import RunDir
from core.runs.store import RunStore

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def _svg(chart) -> str:
    """A chart as inline SVG (vl-convert escapes the text it draws)."""
    return vlc.vegalite_to_svg(chart.to_dict())


def _src(path: Path, key: str, size: int = 160) -> str | None:
    data = thumbnail(path, key, size)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else None


def _figures(rows: pd.DataFrame, root: Path, nearest: dict[str, list[dict]] | None = None,
             names: dict[str, str] | None = None) -> list[dict]:
    """Thumbnails with their labels; `nearest` adds the training photos each looks most like."""
    figures, nearest, names = [], nearest or {}, names or {}
    for row in rows.itertuples():
        src = _src(root / row.path, getattr(row, "sha1", "") or row.path.replace("/", "_"))
        if src:
            examples = [{"src": s, "label": names.get(e["label"], e["label"])} for e in nearest.get(row.path, [])
                        if (s := _src(root / e["path"], e["sha1"], 64))]
            figures.append({"src": src, "path": row.path, "label": row.label, "predicted": row.predicted,
                            "confidence": chance(row.confidence), "examples": examples})
    return figures


def _nearest(run: RunDir, paths: list[str], root: Path) -> dict[str, list[dict]]:
    """For each image, the 3 training photos nearest to it (explanation by example); {} when the
    run has no familiarity index with its photos."""
    from core.deploy.predict import Predictor

    predictor = Predictor.from_run(run)
    if predictor.familiarity is None or predictor.familiarity.photos is None or not paths:
        return {}
    results = predictor.predict([root / p for p in paths])
    return {p: r.get("examples", [])[:3] for p, r in zip(paths, results) if not r.get("unfamiliar")}


def _learning(run: RunDir, names: dict[str, str]) -> dict | None:
    from core.evaluate import learning_curve
    from core.evaluate.words import more_photos_sentence

    result = learning_curve.load(run)
    if result is None:
        return None
    return {"sentence": more_photos_sentence(result["points"], result["classes"], names),
            "svg": _svg(charts.learning_curve(result, names)),
            "scored_on": "test" if result.get("scored_on") == "test" else "validation"}


PER_CLASS_SHARES = ("accuracy", "precision", "tta accuracy", "tta gain")  # fractions, shown as whole percents


def per_class_table(metrics: dict) -> pd.DataFrame:
    """The per-class figures as the Results page and the report show them (one table, one set of words):
    class, images, right, accuracy (which is the recall, so shown once), its 95 % interval, precision, f1,
    training images, and with test-time views their accuracy and gain. Shares stay fractions."""
    table = pd.DataFrame(metrics["per_class"]).rename(columns={"support": "images", "correct": "right",
                                                               "train_count": "training images"})
    table["95 % interval"] = [f"{percent(a)}–{percent(b)}" for a, b in table["ci"]] if "ci" in table else ""
    columns = ["class", "images", "right", "accuracy", "95 % interval", "precision", "f1", "training images"]
    if "tta" in metrics:
        table["tta accuracy"] = table["class"].map(metrics["tta"]["per_class_accuracy"])
        table["tta gain"] = table["tta accuracy"] - table["accuracy"]
        columns += ["tta accuracy", "tta gain"]
    return table[[c for c in columns if c in table.columns]]


def _cell(column: str, value) -> str:
    if isinstance(value, float) and column in PER_CLASS_SHARES:
        return percent(value)
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def build(run_dir: str | Path, examples: int = 8) -> str:
    """The report's HTML text for the run in `run_dir` (evaluated first if needed). Every string
    from the user (run, class and file names) is escaped by the template."""
    from core.evaluate.metrics import evaluate_run, needs_evaluation

    run = RunDir(run_dir)
    if needs_evaluation(run.metrics()):  # evaluated (again, for an older format)
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
    notes = load_class_notes(root)
    names = display_names(notes, metrics["labels"])  # what people read
    glossary = [{"name": names[c], "folder": c, "description": notes.get(c, {}).get("description", "")}
                for c in metrics["labels"] if c in notes]
    metrics, preds = relabel_metrics(metrics, names), relabel_predictions(preds, names)
    split_word = "test" if metrics["split"] == "test" else "validation"
    lo, hi = metrics.get("accuracy_ci", (0.0, 1.0))
    tiles = [(f"{split_word} accuracy (95 % interval {percent(lo)}–{percent(hi)})", percent(metrics["accuracy"])),
             ("balanced accuracy (every class counts the same)", percent(metrics["balanced_accuracy"]))]
    if metrics.get("baseline"):
        tiles.append((f"always answering {metrics['baseline']['class']}", percent(metrics["baseline"]["accuracy"])))
    tiles.append((f"{split_word} images", str(metrics["n"])))
    if "tta" in metrics:
        tiles.append((f"with {metrics['tta']['views']} views per image", percent(metrics["tta"]["accuracy"])))
    per_class = per_class_table(metrics)
    right = preds[preds["correct"].astype(str) == "True"].sort_values("confidence", ascending=False).head(examples)
    wrong = preds[preds["correct"].astype(str) != "True"].sort_values("loss", ascending=False).head(examples)
    nearest = _nearest(run, wrong["path"].tolist(), root)
    return _environment().get_template("report.html.j2").render(
        name=name, backbone=backbone_title(card.backbone), num_classes=card.num_classes, dataset=root.name,
        headline=accuracy_sentence(metrics, split_word) if "correct" in metrics else "", glossary=glossary,
        tiles=[{"label": label, "value": value} for label, value in tiles],
        curves_svg=_svg(charts.curves(epochs)) if len(epochs) else "",
        confusion_svg=_svg(charts.confusion(metrics)),
        most_confused=metrics["most_confused"][:5],
        per_class_svg=_svg(charts.per_class(metrics)),
        per_class_columns=list(per_class.columns),
        per_class_rows=[[_cell(c, v) for c, v in zip(per_class.columns, row)] for row in per_class.itertuples(index=False)],
        calibration_svg=_svg(charts.reliability(metrics["calibration"])), learning=_learning(run, names),
        galleries=[{"title": "Correct examples", "correct": True, "figures": _figures(right, root), "examples_note": ""},
                   {"title": "Mistakes (highest loss first)", "correct": False,
                    "figures": _figures(wrong, root, nearest, names),
                    "examples_note": "Under each mistake, the training photos it looks most like (in the pretrained "
                                     "network's view), with their labels." if nearest else ""}])


def write(run_dir: str | Path, out: str | Path | None = None) -> Path:
    out = Path(out) if out else RunDir(run_dir).report_file
    write_text(out, build(run_dir))
    return out
