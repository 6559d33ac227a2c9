"""Predict page: drop images (or a zip, or a folder) and read the model's answer, with an
'uncertain' verdict below a threshold calibrated on validation, Grad-CAM, and export."""
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.base import access
from core.base.errors import GraftError
from core.data.images import IMAGE_EXTENSIONS, ImageError, fit, open_image
from core.data.notes import display_names, keep_upload, load_class_notes
from core.deploy.export import export, export_zip, int8_preview
from core.deploy.predict import expand_inputs, remove_upload, unpack_upload
from core.present import charts, words
from core.trust import familiar
from core.trust.explain import NotSupported
from pages import common, current_run
from pages.common import escape_markdown as md

common.ensure_navigation()

IMAGE_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)

st.title("Predict")
run_dir = current_run.pick_finished_run("Model (run)", "predict_run")


try:
    model = current_run.predictor(run_dir)
except GraftError as err:
    common.show_error(err, "This run's model cannot be loaded")
    st.stop()
default_threshold = float(model.threshold or 0.5)
c1, c2 = st.columns([3, 1])
threshold = c1.slider("Below this top probability, say 'uncertain'", 0.0, 1.0,
                      value=round(default_threshold, 3), step=0.01, key="threshold",
                      help=words.threshold_help(default_threshold))
top_k = c2.number_input("Top-k", 1, len(model.labels), min(3, len(model.labels)), key="predict_top_k")


try:
    names = display_names(load_class_notes(run_dir.card().data_root), model.labels)
except GraftError:
    names = {label: label for label in model.labels}


decision = current_run.decision_of(run_dir)
if decision:
    st.caption(md(words.decision_rule(decision, names)))


def verdict(result: dict) -> str:
    return words.verdict(result, names, threshold)


def inspection(result: dict) -> str:
    return words.decision_sentence(decision, result["probabilities"], names) \
        if decision and "probabilities" in result else ""


# ------------------------------------------------------------------ single images
st.header("Images")
uploads = st.file_uploader("Drop images here", type=IMAGE_TYPES, accept_multiple_files=True, key="upload_images")
for i, upload in enumerate(uploads or []):
    data = upload.getvalue()
    try:
        loaded = open_image(data)
    except ImageError as err:
        st.error(md(f"{upload.name}: {err.reason}" + (f" ({err.detail})" if err.detail else "")))
        continue
    key, stamp = hashlib.sha1(data).hexdigest(), current_run.model_stamp(run_dir)
    result = current_run.predict_image(str(run_dir), stamp, key, int(top_k), loaded.image)
    shown_image = fit(loaded.image)  # what the browser gets and Grad-CAM explains
    left, mid, right = st.columns([2, 3, 2])
    left.image(shown_image, caption=upload.name + (" (EXIF-rotated)" if "exif-rotated" in loaded.conversions else ""),
               width="stretch")
    mid.markdown(f"**{md(upload.name)}**: {md(verdict(result))}")
    if decision:
        (mid.warning if decision.verdict(result["probabilities"]) == "inspect" else mid.success)(md(inspection(result)))
    common.chart(mid, charts.top_k_bars, [(names.get(c, c), p) for c, p in result["top"]], key=f"topk_{i}")
    current_run.nearest_photos(mid, result, names, model.data_root)
    doubtful = result.get("unfamiliar") or result["confidence"] < threshold
    if doubtful and common.is_owner() and model.data_root and mid.button(
            "Keep it for the inbox", key=f"keep_{i}", help=words.keep_for_inbox_help()):
        try:
            kept = keep_upload(model.data_root, upload.name, data, {**result, "run": run_dir.id,
                                                                     "uncertain": result["confidence"] < threshold})
            mid.success(md(words.kept_for_inbox(kept)))
        except GraftError as err:
            common.show_error(err, "The photo could not be kept")
    if result.get("unfamiliar"):
        mid.caption(md(words.flag_rate_words(familiar.flag_rate(run_dir) or 0.05).capitalize() + "."))
        right.info("No explanation offered: a heatmap of why it chose a class means little for a photo "
                   "unlike anything it was trained on.")
    elif right.toggle("Grad-CAM", key=f"gradcam_{i}"):
        try:
            shown, explained = current_run.gradcam_overlay(str(run_dir), stamp, key, shown_image)
            right.image(shown, caption=f"why '{explained}'", width="stretch")
        except NotSupported as err:
            right.info(md(str(err)))

# ------------------------------------------------------------------ batch
st.header("Batch")
archive = st.file_uploader("A zip of images", type=["zip"], key="upload_zip")
folder = st.text_input("…or a folder on this machine", key="batch_folder") if common.is_owner() else ""
paths, problems = [], []
unpacked = None
if archive is not None:  # unpacked once per upload, removed when the upload goes
    unpacked, paths, problems = unpack_upload(archive.getvalue())
previous, current = st.session_state.get("zip_folder"), str(unpacked) if unpacked else None
if previous and previous != current:
    remove_upload(previous)
st.session_state["zip_folder"] = current
if archive is None and folder.strip():
    try:
        chosen = access.confine(folder)
    except GraftError as err:
        common.show_error(err)
    else:
        if chosen.is_dir():
            paths = expand_inputs([chosen])
        else:
            st.error(words.not_a_folder(md(folder), hint=False))
for name, reason in problems:
    st.warning(md(f"{name}: {reason}"))
if paths:
    bar = st.progress(0.0, text=f"0 / {len(paths)}")
    results = []
    for start in range(0, len(paths), 32):
        results += model.predict(paths[start:start + 32], top_k=int(top_k))
        bar.progress(min(1.0, len(results) / len(paths)), text=f"{len(results)} / {len(paths)}")
    table = pd.DataFrame([{
        "file": str(Path(r["source"]).name), "predicted": names.get(r.get("label", ""), r.get("label", "")),
        "confidence": r.get("confidence"), "verdict": verdict(r) if "label" in r else f"error: {r['error']}",
        **({"decision": decision.verdict(r["probabilities"]) if "label" in r else ""} if decision else {})}
        for r in results])
    rounded_down = np.floor(pd.to_numeric(table["confidence"], errors="coerce") * 100) / 100  # never a false 100 %
    common.percent_table(st, table.assign(confidence=rounded_down),
                         {"confidence": "The model's probability for the class it names."}, hide_index=True,
                         key="batch_table")
    st.download_button("Download CSV", table.to_csv(index=False), file_name="predictions.csv", mime="text/csv",
                       key="batch_csv")

# ------------------------------------------------------------------ export
@st.cache_data(show_spinner="Packing the model…", max_entries=2)
def export_archive(folder: str, exported: str) -> bytes:
    """The export folder as a zip, packed once per export (`exported` is its time stamp)."""
    return export_zip(folder)


if not common.is_owner():
    st.stop()
st.header("Export")
st.caption("The model as a file other software can run (ONNX and/or TorchScript), with its labels, its "
           "preprocessing, the pass/inspect rule and a small standalone script, checked against this dashboard's "
           "answers on the validation photos.")
fmt = st.radio("Format", ["both", "onnx", "torchscript"], horizontal=True, key="export_format",
               help="ONNX runs in most serving stacks and is the faster one on a CPU; TorchScript needs PyTorch.")


def show_int8(figures: dict) -> None:
    """What INT8 changes (size, speed, accuracy on the test photos), in a sentence and a table."""
    st.info(md(words.int8_sentence(figures)))
    common.percent_table(st, pd.DataFrame(words.int8_rows(figures)), {"test accuracy": words.int8_help()},
                         hide_index=True, key="int8_table")


left, right = st.columns([2, 1])
int8 = left.checkbox("INT8: a smaller model, faster on a CPU, with slightly different answers", key="export_int8",
                     disabled=fmt == "torchscript", help="ONNX Runtime's quantization, calibrated on this run's "
                     "training photos. Measure it first to see what it changes.") and fmt != "torchscript"
if right.button("Measure INT8 first", key="int8_measure"):
    with st.spinner("Quantizing a copy and measuring both models on the test photos…"):
        try:
            st.session_state["int8_preview"] = (str(run_dir), int8_preview(run_dir))
        except GraftError as err:
            common.show_error(err, "INT8 could not be measured")
preview = st.session_state.get("int8_preview")
if preview and preview[0] == str(run_dir):
    show_int8(preview[1])
if st.button("Export this model", key="export_button"):
    out = run_dir.export_dir
    with st.spinner("Exporting and checking it gives the same answers…"):
        try:
            card = export(run_dir, out, fmt, force=True, int8=int8)
        except GraftError as err:
            common.show_error(err, "Export failed")
            st.stop()
    st.session_state["exported"] = (str(run_dir), card)
exported = st.session_state.get("exported")
if exported and exported[0] == str(run_dir):
    card = exported[1]
    checks = {k: v for k, v in card["parity"].items() if isinstance(v, dict)}
    same = all(c["ok"] for c in checks.values())
    (st.success if same else st.error)(words.exported_sentence(card["parity"], same))
    st.download_button("Download the model (zip)", export_archive(str(run_dir.export_dir), card["exported"]),
                       file_name=f"{run_dir.id}-model.zip",
                       mime="application/zip", key="export_download", type="primary")
    if card.get("int8") and not (preview and preview[0] == str(run_dir)):
        show_int8(card["int8"])
    with st.expander("Details for engineers (parity figures, files)"):
        for name, check in checks.items():
            st.write(words.parity_line(name, check))
        st.write(words.written_to(md(str(run_dir.export_dir))))

st.subheader("Call it from the line")
st.caption("The same answers over HTTP, for the software beside the camera: start the server on this machine, "
           "then post photos to it. See docs/serving.md for the answers, the limits and the key.")
st.code(words.serve_commands(str(run_dir.path)), language="bash")
if exported and exported[0] == str(run_dir):
    st.caption("Or serve the export (ONNX Runtime" + (", INT8" if exported[1].get("int8") else "")
               + "), the same files a line's computer gets:")
    st.code(words.serve_commands(str(run_dir.export_dir)), language="bash")
