"""What every page shares: the frame (who is looking, session state, the sidebar), the working dataset
and the run store, messages, charts and percent tables. The current run and its model: `pages.current_run`."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image

from core.base import access, settings
from core.base.errors import GraftError
from core.base.storage import default_runs_root
from core.data import catalog, decoding, health, samples
from core.present import words
from core.runs.store import RunStore
from pages import guard

# The pages hand every row of a chart to the browser as a dataset (a long run's per-batch losses
# run to many thousands); altair's default 5,000-row guard is for specs embedded in notebooks.
alt.data_transformers.disable_max_rows()

PAGES = [("pages/home.py", "Home", ":material/home:"), ("pages/dataset.py", "Dataset", ":material/folder_open:"),
         ("pages/train.py", "Train", ":material/model_training:"), ("pages/results.py", "Results", ":material/analytics:"),
         ("pages/predict.py", "Predict", ":material/image_search:"), ("pages/runs.py", "Runs", ":material/list:"),
         ("pages/present.py", "Present", ":material/co_present:"), ("pages/inbox.py", "Inbox", ":material/inbox:")]


# Every page on a phone (390 px): nothing wider than the screen. Charts, tables and code scroll inside
# themselves; photos and columns keep to the screen's width.
PHONE_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 4rem; }
[data-testid="stVegaLiteChart"], [data-testid="stDataFrame"], [data-testid="stTable"], [data-testid="stCode"] {
  max-width: 100%; overflow-x: auto; }
[data-testid="stImage"] img { max-width: 100%; height: auto; }
@media (max-width: 640px) {
  [data-testid="stMainBlockContainer"] { padding-left: 0.75rem; padding-right: 0.75rem; }
  [data-testid="stHorizontalBlock"] { flex-wrap: wrap; }
  [data-testid="stMetricValue"] { font-size: 1.8rem; }
  [data-testid="stFileUploaderDropzone"] { min-width: 0; }
}
</style>"""


def shell():
    """The frame around every page: page config, who is looking, session state, the sidebar with
    the page links. Returns the page to run. A visitor without a key gets the locked page only.

    Streamlit's own page list is off (`client.showSidebarNavigation = false`): with a `pages/`
    folder it would list every file (app, common, …) for the first seconds of a fresh server.
    The sidebar draws the links itself."""
    st.set_page_config(page_title="Graft", page_icon=_favicon(), layout="wide")
    st.session_state["_role_now"] = role()  # decided once per script run; is_owner() reads it
    if st.session_state["_role_now"] is None:  # every address, deep links included, shows the locked page
        return st.navigation([st.Page(_locked, title="Graft", default=True)]
                             + [st.Page(_locked, title="Graft", url_path=Path(path).stem) for path, _, _ in PAGES],
                             position="hidden")
    pages = [st.Page(path, title=title, icon=icon, default=i == 0) for i, (path, title, icon) in enumerate(PAGES)]
    current = st.navigation(pages, position="hidden")
    st.html(PHONE_CSS)
    init_state(os.environ.get("GRAFT_SAMPLE"))
    sidebar(pages)
    return current


def ensure_navigation() -> None:
    """Run a page that Streamlit started without app.py inside app.py's frame instead.

    Streamlit treats a `pages/` folder beside the entrypoint as an old-style multipage app until
    a run of app.py has called `st.navigation`: the first request for /predict on a freshly
    started server runs pages/predict.py alone (no sidebar, every file listed as a page). Each
    page calls this first; in that case it turns the old behaviour off for the server and runs the
    frame, which runs this page again within the same script run (so a button pressed in this run
    still counts), then stops. Through app.py it does nothing.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        shell().run()
        st.stop()


@st.cache_resource(show_spinner=False)
def _favicon() -> Image.Image:
    """The tab icon, drawn here: a material-icon name would make every page load fetch it from
    fonts.gstatic.com, and the dashboard makes no request off the machine."""
    from PIL import ImageDraw

    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 62, 62), radius=14, fill=(46, 125, 50, 255))
    draw.rectangle((16, 30, 48, 34), fill="white")  # a graft: a stem joined onto a rootstock
    draw.polygon([(32, 10), (46, 30), (18, 30)], fill="white")
    draw.rectangle((29, 34, 35, 54), fill="white")
    return icon


# ------------------------------------------------------------------ who is looking
def role() -> str | None:
    """'owner', 'viewer' or None for this session (see `core.base.access`). A key arrives in the link
    (?key=…) or is typed; the view key stays in the address so a reload keeps working, the owner
    key is taken out of it at once (it must not show on a projector)."""
    keys = access.sharing_keys()
    if keys is None:
        return access.OWNER
    given = st.query_params.get(access.KEY_PARAM)
    if given:
        found = access.role_for(given, keys)
        if found and st.session_state.get("_role") != access.OWNER:
            st.session_state["_role"] = found
    current = st.session_state.get("_role")
    if current == access.VIEWER:
        if st.query_params.get(access.KEY_PARAM) != keys.view:
            st.query_params[access.KEY_PARAM] = keys.view  # navigation clears query parameters
    elif access.KEY_PARAM in st.query_params:
        del st.query_params[access.KEY_PARAM]
    guard.seen(current)  # a shared server's guard lets this session upload (pages/guard.py)
    return current


def is_owner() -> bool:
    """Whether this session may change state or reach server folders (decided by `shell`)."""
    return st.session_state.get("_role_now") == access.OWNER


def _sign_in(typed: str) -> bool:
    found = access.role_for(typed, access.sharing_keys())
    if found:
        st.session_state["_role"] = st.session_state["_role_now"] = found
    return found is not None


def _locked() -> None:
    st.title("Graft")
    st.info("This dashboard is shared by link. Ask the presenter for the link (or scan the QR code "
            "on their screen).")
    typed = st.text_input("…or type the key you were given", type="password", key="gate_key")
    if typed:
        if _sign_in(typed):
            st.rerun()
        st.error("That key is not valid.")


def _share_panel() -> None:
    """The owner's view of sharing: the viewer link and its QR code, for the room."""
    keys = access.sharing_keys()
    if keys is None:
        return
    with st.expander("Share with the room", icon=":material/qr_code_2:"):
        view_link = access.link(st.context.headers.get("Host") or f"{access.network_address()}:8501", keys.view)
        st.image(_qr_png(view_link), caption="Viewers: scan to open (view only)", width=200)
        st.code(view_link, language=None)


@st.cache_data(show_spinner=False, max_entries=4)
def _qr_png(text: str) -> bytes:
    import io

    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=6, border=2)
    return out.getvalue()


# ------------------------------------------------------------------ session state and sidebar
def init_state(sample_env: str | None = None) -> None:
    """Session state from the settings file, for whatever this session does not hold yet.

    Runs every time: Streamlit forgets a widget's key (min_per_class) on a page that does not
    draw that widget, and the settings file remembers it. A viewer always follows the owner's
    dataset and runs folder; what a viewer changes lives in the viewer's session only.
    """
    saved = settings.load()
    if not is_owner():
        st.session_state["dataset"] = saved["dataset"] or (sample_env or "")
        st.session_state["runs_dir"] = saved["runs"] or str(default_runs_root())
    st.session_state.setdefault("dataset", saved["dataset"] or (sample_env or ""))
    st.session_state.setdefault("runs_dir", saved["runs"] or str(default_runs_root()))
    st.session_state.setdefault("min_per_class", int(saved["min_per_class"]))
    st.session_state.setdefault("recent", saved["recent"])


def _use_folder(folder: str) -> bool:
    """Make `folder` the working dataset (owner only, under the allowed roots); False with a message
    when it is refused."""
    try:
        folder = str(access.confine(folder))
    except GraftError as err:
        show_error(err)
        return False
    st.session_state["dataset"] = folder
    st.session_state["recent"] = settings.save(dataset=folder)["recent"]
    return True


def sidebar(pages: list) -> None:
    with st.sidebar:
        for page in pages:
            st.page_link(page)
        st.divider()
        st.header("Working data")
        if is_owner():
            _owner_sidebar()
        else:
            name = Path(st.session_state["dataset"]).name if st.session_state["dataset"] else "none chosen yet"
            st.markdown(f"Dataset: **{escape_markdown(name)}**")
            st.caption("You are viewing. The presenter chooses the data and trains.")
            typed = st.text_input("Owner key", type="password", key="owner_key_input",
                                  help="Only the presenter has it: it unlocks training, folders and deleting.")
            if typed and _sign_in(typed) and is_owner():
                st.rerun()


def _owner_sidebar() -> None:
    typed = st.text_input("Dataset folder", value=st.session_state["dataset"], key="dataset_input",
                          help="ROOT/<class>/*.jpg, or ROOT/{train,val,test}/<class>/*")
    if typed.strip() and typed.strip() != st.session_state["dataset"]:
        _use_folder(typed.strip())
    recent = [r for r in st.session_state.get("recent", []) if r != st.session_state["dataset"]]
    if recent:
        st.selectbox("Recent folders", ["—", *recent], key="recent_pick", on_change=_use_recent)
    st.button("Use the sample dataset (ELPV solar cells)", key="use_sample", on_click=_use_sample)
    runs_dir = st.text_input("Runs folder", value=st.session_state["runs_dir"], key="runs_input",
                             help=f"Where trained runs are kept (default {default_runs_root()}).")
    if runs_dir.strip() and runs_dir.strip() != st.session_state["runs_dir"]:
        try:
            folder = str(access.confine(runs_dir.strip()))
        except GraftError as err:
            show_error(err)
        else:
            st.session_state["runs_dir"] = folder
            settings.save(runs=folder)
    _share_panel()


def _use_recent() -> None:
    """The recent folder picked becomes the dataset, and the folder box shows it. A callback: it runs
    before the next script run draws the box, the only moment its text may be set."""
    pick = st.session_state.pop("recent_pick", "—")
    if pick != "—" and _use_folder(pick):
        st.session_state["dataset_input"] = st.session_state["dataset"]


def _use_sample() -> None:
    """The ELPV sample (fetched from PyPI once) becomes the dataset, and the folder box shows it."""
    with st.spinner("Fetching the ELPV sample from PyPI (once)…"):
        folder = str(samples.fetch("elpv", progress=False))
    if _use_folder(folder):
        st.session_state["dataset_input"] = st.session_state["dataset"]


def escape_markdown(text: str) -> str:
    """A user-supplied string (class, file or run name) shown literally inside st.markdown: no
    link, image, HTML, code, emphasis, maths or colour directive can come out of it (intra-word
    underscores and dots are left alone, so defect_067.png still reads as itself)."""
    return re.sub(r"([\\`*\[\]<>$~|])", r"\\\1", str(text))


# A folder's index, split and health are shared by every session, not copied into each (st.cache_resource): at
# 200,000 photos a copy costs a tenth of a second at every call, and nothing changes them in place.
@st.cache_resource(show_spinner="Scanning the folder…", max_entries=8)
def scan(folder: str, signature: tuple) -> catalog.DatasetIndex:
    return catalog.scan(folder)


@st.cache_resource(show_spinner=False, max_entries=16)
def split(folder: str, signature: tuple, min_per_class: int, seed: int = 0) -> catalog.Split:
    return catalog.split(scan(folder, signature), seed=seed, min_per_class=min_per_class)


@st.cache_resource(show_spinner=False, max_entries=8)
def check_health(folder: str, signature: tuple, min_per_class: int) -> health.Health:
    return health.check(scan(folder, signature), split(folder, signature, min_per_class))


@st.cache_resource(show_spinner=False, max_entries=8)
def size_histogram(folder: str, signature: tuple):
    """Images per bin of the shorter side: aggregated here, so 50,000 rows never reach the browser."""
    return health.size_histogram(scan(folder, signature).items)


def current_dataset() -> tuple[str, tuple] | None:
    """(folder, signature) of the working dataset, or None with a message drawn."""
    folder = st.session_state.get("dataset", "").strip()
    if not folder:
        st.info("Choose a dataset folder in the sidebar, or use the sample dataset." if is_owner()
                else "The presenter has not chosen a dataset yet.")
        return None
    try:
        folder = str(access.confine(folder))
    except GraftError as err:
        show_error(err)
        return None
    if not Path(folder).is_dir():
        st.error(words.not_a_folder(escape_markdown(folder)))
        return None
    return folder, catalog.signature(folder) + decoding.signature(folder)  # a decoding's end changes the index


def runs_root() -> str:
    """The runs folder of this session, absolute (the default one when the chosen folder is outside
    the allowed roots)."""
    try:
        return str(access.confine(st.session_state.get("runs_dir") or default_runs_root()))
    except GraftError:
        return str(default_runs_root())


def store() -> RunStore:
    """This session's run store (one per server process and folder), with runs whose training
    process died marked failed."""
    try:
        opened = RunStore.open(runs_root())
    except GraftError as err:
        show_error(err)
        st.stop()
    opened.reconcile()
    if opened.recovered:
        st.warning(opened.recovered)
    return opened


def show_error(err: Exception, what: str = "") -> None:
    """One way to show a problem the user can act on: the message, never a traceback; shown literally,
    since it may quote a typed path or a file name (no link or image can come out of it)."""
    st.error(escape_markdown((f"{what}: " if what else "") + str(err)))  # messages may quote what was typed


@st.cache_data(show_spinner=False, max_entries=256)
def _chart_spec(name: str, _build: Callable[..., alt.TopLevelMixin], *args) -> dict:
    return vega_lite_spec(_build(*args))


def vega_lite_spec(chart: alt.TopLevelMixin) -> dict:
    """The chart's Vega-Lite spec through altair's public `to_dict`, its data as named datasets (which
    `vega_lite_chart` sends to the browser as Arrow tables), without the view size altair's theme adds:
    Streamlit draws a chart in its own theme and at the width of its column."""
    spec = chart.to_dict()
    theme = alt.theme.get()
    added = (theme().get("config") or {}) if theme is not None else {}
    config = spec.get("config") or {}
    for name, value in added.items():  # the theme's entries go, the chart's own configuration stays
        if config.get(name) == value:
            del config[name]
    if "config" in spec and not config:
        del spec["config"]  # the chart sets no configuration of its own
    return spec


def chart(where, build: Callable[..., alt.TopLevelMixin], *args, key: str, **options) -> None:
    """Draw the altair chart `build(*args)`. Its Vega-Lite spec is built once per arguments for every
    viewer: building an altair chart and validating its schema was most of the Results page's draw
    time (0.3 of its 0.5 s), repeated on every rerun by every viewer.

    Charts side by side (an hconcat) are drawn as one chart per column, each as wide as its column:
    a fixed-width row of charts is wider than a phone, and columns stack on a phone."""
    spec = _chart_spec(f"{build.__module__}.{build.__qualname__}", build, *args)
    if "hconcat" not in spec:
        where.vega_lite_chart(spec, key=key, **options)
        return
    shared = {k: v for k, v in spec.items() if k not in ("hconcat", "datasets")}
    for i, (column, part) in enumerate(zip(where.columns(len(spec["hconcat"])), spec["hconcat"])):
        used = json.dumps(part)  # each chart carries only its own data
        datasets = {name: rows for name, rows in spec.get("datasets", {}).items() if f'"{name}"' in used}
        column.vega_lite_chart({**shared, "datasets": datasets, **{k: v for k, v in part.items() if k != "width"}},
                               key=f"{key}_{i}" if i else key, **options)


def percent_table(where, frame: pd.DataFrame, shares, column_config: dict | None = None, **options):
    """Draw `frame` with its fraction columns `shares` (a list, or {column: help}) in the one format for
    accuracies, a whole percent (Streamlit's own "percent" shows 41.67 %, a precision a few images do not
    carry); returns what `dataframe` returns (a row selection where asked for)."""
    helps = shares if isinstance(shares, dict) else dict.fromkeys(shares)
    shown = frame.copy()
    for column in helps:
        if column in shown.columns:
            shown[column] = pd.to_numeric(shown[column], errors="coerce") * 100
    config = {column: st.column_config.NumberColumn(format="%.0f%%", help=text) for column, text in helps.items()}
    return where.dataframe(shown, column_config={**config, **(column_config or {})}, **options)
