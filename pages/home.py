import pandas as pd
import streamlit as st

from core.models.choices import FREEZE_WORDS, backbone_title
from core.present import words
from pages import common

common.ensure_navigation()

st.title("Graft")
st.markdown("Fine-tune an ImageNet-pretrained model on **your** folder of photos — one sub-folder per "
            "class — on an ordinary CPU, offline.  \nSee the data, train with live curves, read the "
            "results a stakeholder understands, and drop in new photos to label them.")

current = common.current_dataset()
if current:
    folder, signature = current
    index = common.scan(folder, signature)
    if index.items.empty:
        st.warning(words.no_images_sentence(common.escape_markdown(folder)))
    else:
        cols = st.columns(4)
        cols[0].metric("Classes", len(index.classes), help="One per sub-folder of the dataset folder.")
        cols[1].metric("Images", f"{len(index.items):,}", help="Photos that open and will be used.")
        cols[2].metric("Skipped files", f"{len(index.skipped):,}",
                       help="Files that are not readable images; the Dataset page lists each with the reason.")
        cols[3].metric("Test photos", "from the folders" if index.layout == "splits" else "set aside",
                       help="From the folder's own train/val/test sub-folders, or set aside at random for each "
                            "run (70 % to learn from, 15 % to choose the model, 15 % to test it).")

st.subheader("Latest runs")
runs = common.store().list()
if runs.empty:
    st.write("No runs yet.")
else:
    latest = runs.head(5)
    table = pd.DataFrame({"name": latest["name"], "model": latest["backbone"].map(backbone_title),
                          "what trains": latest["freeze"].map(lambda f: FREEZE_WORDS.get(f, f)),
                          "status": latest["status"], "validation accuracy": latest["best_val_acc"],
                          "test accuracy": latest["test_acc"]})
    common.percent_table(st, table, {"validation accuracy": "On the photos used to choose the model (its best epoch).",
                                     "test accuracy": "On held-out test photos, never used in training or choosing."},
                         hide_index=True, key="latest_runs")

st.subheader("Next step")
if not current:
    st.write("Pick a dataset in the sidebar.")
elif runs.empty:
    st.page_link("pages/dataset.py", label="Check the data, then train a first model", icon=":material/arrow_forward:")
else:
    st.page_link("pages/results.py", label="Read the latest results", icon=":material/arrow_forward:")
    st.page_link("pages/present.py", label="Present it to a room, step by step", icon=":material/co_present:")
