"""Figures, one module per stage. Uses matplotlib's non-interactive Agg backend."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")


def save_figure(fig, path: str | Path, *, dpi: int = 110, tight: bool = False) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from ..fsio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
