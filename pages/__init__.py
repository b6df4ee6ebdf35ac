"""The app's pages and the one ``st.navigation`` over them, shared by app.py and pages/common.py.

A package (not a loose folder) so that both the entry script and the pages' shared module can
build the same navigation: Streamlit lists every ``pages/*.py`` as a page of a legacy multipage
app until ``st.navigation`` has run once in the server process (an ``__init__.py`` is never
listed), and pages/common.py needs the app's page list to end that mode on a deep link (see
``pages.common``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import streamlit as st

if TYPE_CHECKING:
    from streamlit.navigation.page import StreamlitPage

# (script, title, icon); the first one is the default page. URLs are the file stems: /compare, /runs.
PAGES: tuple[tuple[str, str, str], ...] = (
    ("pages/lab.py", "Lab", "🧪"),
    ("pages/diagnostics.py", "Diagnostics", "📈"),
    ("pages/embeddings.py", "Embeddings", "🌀"),
    ("pages/compare.py", "Compare", "⚖️"),
    ("pages/gallery.py", "Gallery", "🖼️"),
    ("pages/sweeps.py", "Sweeps", "🗺️"),
    ("pages/runs.py", "Runs", "🗂️"),
)

_navigated = False  # whether app_navigation() has run in this process


def app_navigation(position: Literal["sidebar", "hidden", "top"] = "sidebar") -> StreamlitPage:
    """``st.navigation`` over :data:`PAGES` (the page the URL names, or Lab); app.py runs what it returns."""
    global _navigated
    page = st.navigation([st.Page(path, title=title, icon=icon, default=i == 0)
                          for i, (path, title, icon) in enumerate(PAGES)], position=position)
    _navigated = True
    return page


def navigated() -> bool:
    """True once app.py's navigation has run in this server process."""
    return _navigated
