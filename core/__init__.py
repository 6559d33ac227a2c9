"""Graft core: a plain library (no Streamlit) that turns a folder of photos into a
fine-tuned, evaluated, reusable image classifier. Driven by `python -m core`, the
dashboard pages and the tests alike."""

__version__ = "0.1.0"
