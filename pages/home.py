import streamlit as st

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
        st.warning(f"No usable images in `{folder}`: it needs one sub-folder per class with images in it.")
    else:
        cols = st.columns(4)
        cols[0].metric("Classes", len(index.classes))
        cols[1].metric("Images", len(index.items))
        cols[2].metric("Skipped files", len(index.skipped))
        cols[3].metric("Layout", "given split" if index.layout == "splits" else "auto split")

st.subheader("Latest runs")
runs = common.store().list()
if runs.empty:
    st.write("No runs yet.")
else:
    st.dataframe(runs.head(5)[["name", "backbone", "freeze", "status", "best_val_acc", "test_acc"]],
                 hide_index=True)

st.subheader("Next step")
if not current:
    st.write("Pick a dataset in the sidebar.")
elif runs.empty:
    st.page_link("pages/dataset.py", label="Check the data, then train a first model", icon=":material/arrow_forward:")
else:
    st.page_link("pages/results.py", label="Read the latest results", icon=":material/arrow_forward:")
