"""Regularization Lab engine: plain Python + torch (no Streamlit import)."""

__version__ = "0.1.0"
