"""Regularization Lab — Streamlit entry point: page config and navigation over pages/ (listed in pages/__init__.py)."""

import os

import streamlit as st

from engine.projections import warm_up
from pages import app_navigation

st.set_page_config(page_title="Regularization Lab", page_icon="🧪", layout="wide")
page = app_navigation()
try:
    page.run()
finally:  # after the page is drawn: the JIT thread holds the GIL for seconds and would delay the first page
    if not os.environ.get("LAB_NO_WARMUP"):  # set by the in-process AppTests: no stray JIT thread at exit
        warm_up()  # umap's numba JIT compiles in a daemon thread (once per process), never blocking a page
