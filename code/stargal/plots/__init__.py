"""Figures, one module per stage, drawn on matplotlib's non-interactive Agg backend and saved atomically."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def use_agg() -> None:
    """Select the Agg backend (files only, never a window) once, before the first figure is made."""
    import matplotlib

    matplotlib.use("Agg")


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the Agg backend."""
    use_agg()
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | Path, *, dpi: int = 110, tight: bool = False) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from ..fsio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
