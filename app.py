"""Regularization Lab — Streamlit entry point: page config and navigation over pages/."""

import streamlit as st

st.set_page_config(page_title="Regularization Lab", page_icon="🧪", layout="wide")
st.navigation([
    st.Page("pages/lab.py", title="Lab", icon="🧪", default=True),
    st.Page("pages/diagnostics.py", title="Diagnostics", icon="📈"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
    st.Page("pages/runs.py", title="Runs", icon="🗂️"),
]).run()
