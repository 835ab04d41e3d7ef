"""A field's share of stars, estimated from a model's p_star over its sources, and p_star moved to that share
(pure: arrays in, numbers out).

A network's p_star carries the mix of stars and galaxies it was trained on (64 % stars on the shipped model's
sky), while real fields range from about a quarter stars at the Galactic poles to nearly all stars in the plane.
If the two classes look the same from field to field and only their shares differ (label shift), Bayes' rule
moves each p_star to a field's share by the ratio of the odds, and that share is the fixed point of the mean
moved p_star: the EM algorithm of Saerens, Latinne & Decaestecker (2002, Neural Computation 14, 21).
``bench/prior_shift.py`` measures what it would change on the simulated and the real sky.
"""

from __future__ import annotations

import numpy as np

# an estimate is kept inside this range: at 0 or 1 the odds ratio would make every source one class
PRIOR_LIMITS = (0.01, 0.99)


def adjusted(p_star: np.ndarray, prior: float, training_prior: float) -> np.ndarray:
    """float64 p_star moved from the training set's share of stars ``training_prior`` to ``prior``."""
    p = np.clip(np.asarray(p_star, np.float64), 0.0, 1.0)
    star = p * (prior / training_prior)
    galaxy = (1.0 - p) * ((1.0 - prior) / (1.0 - training_prior))
    return star / (star + galaxy)


def field_prior(p_star: np.ndarray, training_prior: float, *, tolerance: float = 1e-6, max_steps: int = 1000) -> float:
    """The share of stars among the sources whose p_star (under ``training_prior``) is given: the EM fixed point,
    within PRIOR_LIMITS; ``training_prior`` itself for no source."""
    p = np.asarray(p_star, np.float64)
    p = p[np.isfinite(p)]
    if not 0.0 < training_prior < 1.0:
        raise ValueError(f"training_prior {training_prior}: must lie strictly between 0 and 1")
    if p.size == 0:
        return float(training_prior)
    low, high = PRIOR_LIMITS
    prior = float(np.clip(training_prior, low, high))
    for _ in range(max_steps):
        new = float(np.clip(adjusted(p, prior, training_prior).mean(), low, high))
        if abs(new - prior) < tolerance:
            return new
        prior = new
    return prior


def threshold_at(threshold: float, prior: float, training_prior: float) -> float:
    """The p_star (under ``training_prior``) that ``adjusted`` moves to ``threshold`` at ``prior``: calling star
    where p_star reaches it is calling star where the moved p_star reaches ``threshold``."""
    return float(adjusted(np.array([threshold]), training_prior, prior)[0])
