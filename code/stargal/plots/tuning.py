"""Figure of a hyper-parameter study: objective per trial (best so far) and objective against each parameter."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter

from . import save_figure, subplots

_META = ("trial", "state", "val_loss", "val_mcc", "val_accuracy", "epochs", "seconds")


def plot_study(
    rows: list[dict], importance: dict, objective: str, path: Path, title: str = "", log_params: dict | None = None
) -> Path:
    """Write the study figure to ``path`` (PNG, atomically); ``log_params`` ({name: (lo, hi)}) get a log axis
    spanning their whole search range."""
    log_params = log_params or {}
    params = [k for k in rows[0] if k not in _META] if rows else []
    n = 1 + len(params)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)
    ax = axes.flat[0]
    done = [r for r in rows if r["state"] == "COMPLETE" and r[objective] is not None]
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    if done:
        num = np.array([r["trial"] for r in done])
        val = np.array([r[objective] for r in done], dtype=float)
        ax.plot(num, val, "o", color="C0", label="complete")
        order = np.argsort(num)
        ax.step(num[order], np.minimum.accumulate(val[order]), where="post", color="C3", label="best so far")
    if pruned:
        top = max((r[objective] for r in done), default=1.0)  # pruned trials have no final value: mark them on top
        ax.plot(
            [r["trial"] for r in pruned], np.full(len(pruned), top), "x", color="0.5", label=f"pruned ({len(pruned)})"
        )
    ax.set_xlabel("trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(objective)
    ax.legend(fontsize=7)
    for ax, name in zip(axes.flat[1:], params, strict=False):
        xs = [r[name] for r in done]
        vals = [r[objective] for r in done]
        if xs and all(isinstance(v, int | float) for v in xs):
            ax.plot(xs, vals, "o", alpha=0.8)
            if name in log_params and all(v > 0 for v in xs):
                ax.set_xscale("log")
                ax.set_xlim(*log_params[name])
                ax.xaxis.set_minor_formatter(NullFormatter())
        elif xs:
            labels = sorted({str(v) for v in xs})
            ax.plot([labels.index(str(v)) for v in xs], vals, "o", alpha=0.8)
            ax.set_xticks(range(len(labels)), labels)
        imp = importance.get(name)
        ax.set_xlabel(name + (f" (importance {imp:.2f})" if imp is not None else ""), fontsize=8)
        ax.set_ylabel(objective, fontsize=8)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path
