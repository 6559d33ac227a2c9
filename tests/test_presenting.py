"""Presenting to stakeholders (issue 12), through AppTest on a real run: class display names kept in
the dataset's .graft/ folder and used on Results, Predict and in the report; readable run names;
progress in plain words."""
from __future__ import annotations

import shutil

import pytest

from core.base.errors import BadInput
from core.data import notes
from core.runs.folder import RunDir
from core.runs.store import RunStore, readable_name

from helpers import open_page, run_cli
from helpers import run_state as _state

NAMES = {"defect_000": {"name": "flawless", "description": "no visible crack"},
         "defect_100": {"name": "cracked <b>badly</b>", "description": "a crack across the cell"}}


@pytest.fixture
def named_classes(elpv_small):
    """Display names written into the (shared) sample subset, removed afterwards."""
    notes.save_class_notes(elpv_small, NAMES)
    yield elpv_small
    shutil.rmtree(notes.notes_dir(elpv_small), ignore_errors=True)


def test_display_names_are_kept_in_the_hidden_folder_and_the_scan_ignores_it(named_classes):
    from core.data import catalog

    assert (named_classes / ".graft" / "classes.json").is_file()
    assert notes.load_class_notes(named_classes)["defect_100"]["name"] == "cracked <b>badly</b>"
    assert ".graft" not in catalog.scan(named_classes, use_cache=False).classes
    with pytest.raises(BadInput, match="same name"):
        notes.save_class_notes(named_classes, {"defect_000": {"name": "x"}, "defect_100": {"name": "x"}})


@pytest.mark.slow
def test_results_predict_and_the_report_speak_in_display_names(named_classes, trained_run, tmp_path):
    state, runs, run_id = _state(trained_run)
    at = open_page("pages/results.py", str(named_classes), str(runs), **state)
    assert not at.exception, at.exception
    per_class = next(df.value for df in at.dataframe if "training images" in df.value.columns)
    shown_names = {"defect_000": "flawless", "defect_100": "cracked <b>badly</b>"}
    metrics = RunDir(runs / run_id).metrics()
    assert per_class["class"].tolist() == [shown_names.get(p["class"], p["class"]) for p in metrics["per_class"]]
    assert per_class["images"].tolist() == [p["support"] for p in metrics["per_class"]]  # each name on its own row
    headline = " ".join(m.value for m in at.markdown)
    baseline = RunDir(runs / run_id).metrics()["baseline"]["class"]  # the most common test class
    expected = {"defect_000": "flawless", "defect_100": "cracked \\<b\\>badly\\</b\\>"}.get(baseline, baseline)
    assert f"always says {expected}" in headline  # its display name, escaped
    page = open_page("pages/predict.py", str(named_classes), str(runs), **state)
    image = sorted((named_classes / "defect_000").glob("*.png"))[0]
    page.file_uploader(key="upload_images").set_value([("cell.png", image.read_bytes(), "image/png")]).run()
    assert not page.exception, page.exception
    text = " ".join(m.value for m in page.markdown)
    assert "defect_000 (" not in text and "defect_100 (" not in text  # a named class never shows its folder name
    report = tmp_path / "r.html"
    assert run_cli("report", run_id, str(report), "--runs", str(runs)).returncode == 0
    html = report.read_text()
    assert "What the classes mean" in html and "a crack across the cell" in html
    assert "cracked &lt;b&gt;badly&lt;/b&gt;" in html and "<b>badly</b>" not in html


def test_the_owner_edits_the_names_and_a_viewer_only_reads_them(named_classes, tmp_path, monkeypatch):
    at = open_page("pages/dataset.py", str(named_classes), str(tmp_path / "runs"))
    assert "Save the names" in [b.label for b in at.button]
    monkeypatch.setenv("GRAFT_VIEW_KEY", "view-key-0123456789abcdef")
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "home"))
    from core.base import settings

    settings.save(dataset=str(named_classes))
    from streamlit.testing.v1 import AppTest

    from helpers import ROOT

    viewer = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    viewer.query_params["key"] = "view-key-0123456789abcdef"
    viewer.run()
    viewer.switch_page("pages/dataset.py").run()
    assert not viewer.exception, viewer.exception
    assert "Save the names" not in [b.label for b in viewer.button]
    glossary = next(df.value for df in viewer.dataframe if "display name" in df.value.columns)
    assert glossary.set_index("folder").loc["defect_100", "what it means"] == "a crack across the cell"


def test_runs_get_readable_names_by_default(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = store.create({"backbone": "efficientnet_lite0", "freeze": "head", "epochs": 10})
    name = store.get(run_id)["name"]
    assert name.startswith("Lite0 · head only · 10 epochs · ") and run_id not in name
    assert readable_name({"backbone": "timm/resnet18", "freeze": "partial", "epochs": 3}).startswith(
        "resnet18 · last stages · 3 epochs")


def test_progress_is_said_in_plain_words_with_an_eta():
    from core.present.words import describe_progress

    fraction, words = describe_progress({"phase": "features train eval", "phase_done": 640, "phase_total": 1823,
                                         "phase_eta": 75.0}, {"epochs": 10}, 30.0)
    assert fraction == pytest.approx(640 / 1823)
    assert words.startswith("Reading the training photos once") and "640 of 1823" in words and "1 min left" in words
    _, words = describe_progress({"phase": "train", "step": 5, "steps": 50, "epoch": 1, "eta": 12.0}, {"epochs": 10}, 3)
    assert words == "Learning: epoch 1 of 10 · about 10 s left"
    _, words = describe_progress({"phase": "evaluate"}, {"epochs": 10}, 31.0)
    assert "Scoring the held-out test photos" in words and "ETA 0" not in words


def test_home_lists_the_latest_runs_in_the_words_and_percents_of_the_other_pages(trained_run, elpv_small):
    runs, run_id, _ = trained_run
    at = open_page("pages/home.py", str(elpv_small), str(runs))
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "what trains" in df.value.columns)
    stored = RunStore.open(runs).get(run_id)
    row = table[table["name"] == stored["name"]].iloc[0]
    assert row["model"] == "Lite0" and row["what trains"] == "head only"  # not efficientnet_lite0 / head
    assert row["test accuracy"] == pytest.approx(100 * stored["test_acc"])  # shown as a whole percent
    assert "backbone" not in table.columns and "best_val_acc" not in table.columns
    assert all(m.help for m in at.metric)  # every figure has its sentence
    on_disk = {d.name: len(list(d.glob("*.png"))) for d in elpv_small.iterdir() if d.is_dir() and d.name[0] != "."}
    figures = {m.label: m.value for m in at.metric}
    assert (figures["Classes"], figures["Images"], figures["Skipped files"]) == (
        str(len(on_disk)), str(sum(on_disk.values())), "0")  # the dataset's figures are the files on disk


def test_a_run_clicked_on_the_runs_page_opens_on_results_and_predict(trained_run, elpv_small):
    runs, run_id, _ = trained_run
    at = open_page("pages/runs.py", str(elpv_small), str(runs))
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "status" in df.value.columns)
    row = table.index[table["id"] == run_id][0]
    at.session_state["runs_table"] = {"selection": {"rows": [int(row)], "columns": []}}  # a click on the row
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["current_run"] == run_id
    links = [link.proto.label for link in at.get("page_link")]
    assert "See its results" in links and "Label new photos with it" in links, links
    at.switch_page("pages/results.py")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="results_run").value == run_id  # Results shows the run clicked


def test_a_probability_never_reads_as_certain_unless_it_is():
    from core.present.words import chance

    assert [chance(p) for p in (0.997, 1.0, 0.003, 0.0, 0.5, 0.994)] == [">99%", "100%", "<1%", "0%", "50%", "99%"]


def test_the_training_curves_legend_names_only_the_lines_drawn(trained_run):
    from core.present import charts

    runs, run_id, _ = trained_run
    spec = charts.curves(RunStore.open(runs).epochs(run_id)).to_dict()
    for chart in spec["hconcat"]:
        drawn = sorted({row["split"] for row in spec["datasets"][chart["data"]["name"]]})
        assert chart["encoding"]["color"]["scale"]["domain"] == drawn == ["train", "val"]  # no 'test' without a line
    accuracy = next(c for c in spec["hconcat"] if c["title"] == "accuracy")
    assert accuracy["encoding"]["y"]["axis"]["format"] == ".0%"  # accuracies read as percents, as everywhere


def test_the_model_kept_is_named_in_plain_words():
    from core.present import words
    from core.train import stages

    record = [{"stage": 1, "words": stages.FIRST_WORDS, "val_acc": 0.78, "kept": False},
              {"stage": 2, "words": stages.RICH_WORDS, "best_val_acc": 0.811, "kept": True},
              {"stage": 3, "words": "fine-tuning", "epochs": 0, "skipped": True}]
    assert words.kept_sentence(record, None) == f"The model kept comes from stage 2, {stages.RICH_WORDS} (validation accuracy 81%)."
    fit = {"chosen": "converged", "val_acc": 0.778, "loop_val_acc": 0.74}
    assert "78%, against 74% at the best epoch" in words.kept_sentence(None, fit)
    assert words.kept_sentence(None, None) is None
