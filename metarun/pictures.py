"""Figures drawn in memory as PNG bytes: matplotlib's Agg canvas directly (no pyplot), so no
display is needed, no global backend state is touched and files are written atomically by
whoever keeps them (report plots, a learner's pictures of what it predicts)."""

from __future__ import annotations

import io
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas, laid out to fit its labels."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure, dpi: int = 120) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def file_stem(name: str) -> str:
    """``val/samples`` -> ``val_samples``: a metric's or picture's name as a file name."""
    return re.sub(r"[^\w.-]", "_", name)
