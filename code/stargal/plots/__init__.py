"""Figures, one module per stage. Uses matplotlib's non-interactive Agg backend."""

import matplotlib

matplotlib.use("Agg")
