"""Where and why stars and galaxies are hard to separate: a Markdown section built from measured numbers.

Pure functions: per-magnitude metrics (``stargal.metrics.by_magnitude`` rows, as stored in a model's
metrics.json) and test-split arrays in; Markdown text and example selections out. Every number in the
text is computed from the inputs; the physical explanations are the standard ones for SDSS imaging.
"""

from __future__ import annotations

import numpy as np

from .metrics import defined, magnitude_bin_label
from .tables import markdown_table

BLEND_ARCSEC = 3.0  # a neighbour closer than this shares the object's PSF wings (seeing ~1-1.6")
BRIGHT_MAG = 16.0  # brighter than this, SDSS star cores approach saturation (~14 mag) and bleed
FAINT_MAG = 21.0
RATED_BIN = 20  # objects a magnitude bin needs for its accuracy to be quoted in the text


def find_by_magnitude(metrics: dict, prefer: str = "test") -> list[dict]:
    """The per-magnitude rows (dicts with "bin" and "accuracy") in a metrics.json, preferring the ``prefer`` split."""
    found: list[tuple[int, list[dict]]] = []

    def walk(node, path: tuple[str, ...]) -> None:
        if (
            isinstance(node, list)
            and node
            and all(isinstance(r, dict) and "bin" in r and "accuracy" in r for r in node)
        ):
            found.append((0 if prefer in path else 1, node))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, str(k)))

    walk(metrics, ())
    if not found:
        return []
    return sorted(found, key=lambda t: t[0])[0][1]


def group_accuracy(y: np.ndarray, p: np.ndarray, mask: np.ndarray, threshold: float) -> tuple[int, float | None]:
    """(size, accuracy) of the objects selected by ``mask``; accuracy None for an empty group."""
    n = int(mask.sum())
    return n, (float(np.mean((p[mask] >= threshold) == (y[mask] == 1))) if n else None)


def select_examples(y, p, mag, neighbour, threshold: float, per_row: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of example patches per difficulty (bright/faint stars and galaxies, blends, confident errors)."""
    y, p, mag, neighbour = (np.asarray(a) for a in (y, p, mag, neighbour))
    rng = np.random.default_rng(seed)
    wrong = (p >= threshold) != (y == 1)
    confidence = np.abs(p - threshold)
    groups = {
        f"bright stars (r < {BRIGHT_MAG:g})": (y == 1) & (mag < BRIGHT_MAG),
        f"bright galaxies (r < {BRIGHT_MAG + 2:g})": (y == 0) & (mag < BRIGHT_MAG + 2),
        f"faint stars (r > {FAINT_MAG:g})": (y == 1) & (mag > FAINT_MAG),
        f"faint galaxies (r > {FAINT_MAG:g})": (y == 0) & (mag > FAINT_MAG),
        f'blends (neighbour < {BLEND_ARCSEC:g}")': neighbour < BLEND_ARCSEC,
    }
    out = {}
    for name, mask in groups.items():
        idx = np.flatnonzero(mask)
        if idx.size:
            out[name] = np.sort(rng.choice(idx, size=min(per_row, idx.size), replace=False))
    err = np.flatnonzero(wrong)
    if err.size:
        out["most confident errors"] = err[np.argsort(-confidence[err])][:per_row]
    return out


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f} %"


def _num(v, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def difficulty_markdown(
    by_mag: list[dict],
    *,
    y: np.ndarray | None = None,
    p: np.ndarray | None = None,
    mag: np.ndarray | None = None,
    neighbour: np.ndarray | None = None,
    threshold: float = 0.5,
    figure: str | None = None,
    model: str = "",
) -> str:
    """The Markdown section: a per-magnitude table, measured statements, and the reasons behind them."""
    lines = ["## Where stars and galaxies are hard to separate", ""]
    if model:
        lines += [f"Measured on the test split with model `{model}` (decision threshold {threshold:.2f}).", ""]
    header = ["r PSF mag", "objects", "stars", "galaxies", "accuracy", "MCC", "star completeness", "star purity"]
    header.append("galaxy completeness")
    rows = [
        [magnitude_bin_label(r), r.get("n", ""), r.get("stars", ""), r.get("galaxies", ""), _pct(r.get("accuracy")),
         _num(defined(r, "mcc")), _pct(r.get("star_completeness")), _pct(r.get("star_purity")),
         _pct(r.get("galaxy_completeness"))]
        for r in by_mag
    ]  # fmt: skip
    lines += [markdown_table(header, rows, fmt=str).rstrip("\n"), ""]
    findings = []
    rated = [
        r for r in by_mag if r.get("n", 0) >= RATED_BIN and r.get("accuracy") is not None and r["bin"] != "unknown"
    ]
    if rated:
        best = max(rated, key=lambda r: r["accuracy"])
        worst = min(rated, key=lambda r: r["accuracy"])
        fewer = len(rated) < sum(r["bin"] != "unknown" and r.get("accuracy") is not None for r in by_mag)
        findings.append(
            f"Accuracy ranges from {_pct(worst['accuracy'])} (r {magnitude_bin_label(worst)}, {worst['n']} objects) to "
            f"{_pct(best['accuracy'])} (r {magnitude_bin_label(best)}, {best['n']} objects)"
            + (f" over the bins of {RATED_BIN} objects or more (a smaller bin's accuracy is mostly chance)." if fewer
               else ".")
        )  # fmt: skip
        faint = rated[-1]
        if faint is not best:
            findings.append(
                f"In the faintest bin (r {magnitude_bin_label(faint)}) star completeness is {_pct(faint.get('star_completeness'))} and "
                f"star purity {_pct(faint.get('star_purity'))}, MCC {_num(defined(faint, 'mcc'))}."
            )
    if y is not None and p is not None and neighbour is not None:
        blend = np.asarray(neighbour) < BLEND_ARCSEC
        nb, ab = group_accuracy(np.asarray(y), np.asarray(p), blend, threshold)
        ni, ai = group_accuracy(np.asarray(y), np.asarray(p), ~blend, threshold)
        if nb and ai is not None:
            findings.append(
                f'Objects with a catalogued neighbour within {BLEND_ARCSEC:g}" ({nb}): accuracy {_pct(ab)}, '
                f"against {_pct(ai)} for the {ni} isolated ones."
            )
    if y is not None and p is not None and mag is not None:
        bright = np.asarray(mag) < BRIGHT_MAG
        nbright, abright = group_accuracy(np.asarray(y), np.asarray(p), bright, threshold)
        if nbright:
            findings.append(f"Bright objects (r < {BRIGHT_MAG:g}, {nbright}): accuracy {_pct(abright)}.")
    if findings:
        lines += ["Measured:", ""] + [f"- {f}" for f in findings] + [""]
    lines += [
        "Why:",
        "",
        "- **Faint end.** A star is a source whose profile equals the PSF; a galaxy is measurably wider. The"
        " difference that matters is a fraction of a pixel in width, and at r > 21 the noise in each pixel is"
        " comparable to the source itself, so small, faint galaxies look point-like and faint stars look"
        " fuzzy. Faint galaxies also outnumber faint stars, so the decision threshold trades star completeness"
        " against star purity there (the table shows which one this model gives up).",
        "- **Seeing.** With a PSF FWHM of 1.0-1.6 arcsec (2.5-4 pixels), galaxies smaller than about the PSF"
        " are unresolved; the same galaxy is separable in good seeing and not in bad, so the faint-end limit"
        " moves with each field's seeing.",
        "- **Blends.** When two sources fall within a few arcseconds, the patch holds two profiles; their sum"
        " is extended even if both are stars, and a star on a galaxy's outskirts inherits the galaxy's light.",
        "- **Saturation.** Stars brighter than r of about 14 saturate the CCD; the frames interpolate over the"
        " saturated core and its bleed trail along rows, leaving flat or hollow cores and streaks that look"
        " extended, and there are few such stars in any field to learn from.",
        "",
    ]
    if figure:
        lines += [f"![Example patches of hard and easy cases]({figure})", ""]
    return "\n".join(lines)
