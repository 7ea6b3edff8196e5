"""The far tail of the normal scores as a generalised Pareto distribution (peaks over threshold), for a threshold at a
quantile the normal images alone cannot resolve (``score.tail = gpd``).

Where fewer than :data:`RESOLVED` normal scores are expected above the target quantile, the empirical quantile is an
interpolation between the few largest scores and moves with whichever were drawn; the tail model extrapolates from
the :func:`exceedance_count` largest instead (Pickands-Balkema-de Haan: the excesses over a high threshold are about
generalised Pareto). With fewer than :data:`MIN_EXCEEDANCES` of them the empirical quantile stays, and the record
says so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RESOLVED = 5  # the tail model takes over where fewer than this many normal scores are expected above the quantile
MIN_EXCEEDANCES = 20  # fewest excesses a generalised Pareto fit rests on; fewer: the empirical quantile
TAIL_SHARE = 0.1  # the excesses are the largest 10% of the normal scores (at least MIN_EXCEEDANCES)
MAX_TAIL_SHARE = 0.25  # ... but never more than a quarter of them: below that they are the body, not the tail
BOOTSTRAP = 100  # resamples of the excesses behind the false-alarm interval (seeded: the same scores, the same one)


def exceedance_count(n: int) -> int:
    """How many of ``n`` normal scores the tail is fitted on: the largest TAIL_SHARE of them, at least
    MIN_EXCEEDANCES, at most MAX_TAIL_SHARE of them (0 where those two cannot both hold: fewer than 80 scores)."""
    k = max(MIN_EXCEEDANCES, int(np.ceil(TAIL_SHARE * n)))
    return k if k <= MAX_TAIL_SHARE * n else 0


@dataclass(frozen=True)
class TailFit:
    """A generalised Pareto fit to the ``exceedances`` largest of ``n`` normal scores, as excesses over ``u`` (the
    largest score below them): P(score > t) = exceedances / n x GPD(shape, scale).sf(t - u) for t >= u."""

    u: float
    shape: float
    scale: float
    exceedances: int
    n: int

    def exceedance(self, t: float) -> float:
        """The share of normal scores above ``t`` the fit gives (the empirical share below ``u``)."""
        from scipy.stats import genpareto

        return float(self.exceedances / self.n * genpareto.sf(max(t - self.u, 0.0), self.shape, scale=self.scale))

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the normal scores by the fit (q above the share of scores below ``u``)."""
        from scipy.stats import genpareto

        rest = (1.0 - q) * self.n / self.exceedances  # the share of the excesses above the quantile
        return float(self.u + genpareto.isf(min(max(rest, 0.0), 1.0), self.shape, scale=self.scale))

    def to_dict(self) -> dict:
        return asdict(self)


def fit_tail(values: np.ndarray) -> TailFit | None:
    """The generalised Pareto fit (location 0, maximum likelihood) to the largest :func:`exceedance_count` of
    ``values`` over the next one; None where there are too few for that (:func:`exceedance_count`) or no spread among
    them."""
    from scipy.stats import genpareto

    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = v.size
    k = exceedance_count(n)
    if k < MIN_EXCEEDANCES:
        return None
    u = float(v[n - k - 1])
    excess = v[n - k:] - u
    if not np.all(np.isfinite(excess)) or excess.max() <= 0:
        return None
    shape, _, scale = genpareto.fit(excess, floc=0.0)
    return TailFit(u, float(shape), float(scale), k, n)


def needs_tail(n: int, quantile: float) -> bool:
    """True where the ``quantile`` of ``n`` normal scores lies beyond what they resolve: fewer than RESOLVED of
    them expected above it."""
    return (1.0 - quantile) * n < RESOLVED


@dataclass(frozen=True)
class TailThreshold:
    """A threshold from the normal scores' tail: the value, the fit it came from (None: the empirical quantile, for
    ``note``'s reason) and the false-alarm interval the fit's uncertainty gives (bootstrap of the excesses)."""

    threshold: float
    fit: TailFit | None
    above: int  # normal scores above the threshold
    low: float = float("nan")
    high: float = float("nan")
    note: str = ""

    def record(self) -> dict:
        """What the calibration stores."""
        return {"threshold": self.threshold, "fit": None if self.fit is None else self.fit.to_dict(),
                "above": self.above, "low": self.low, "high": self.high, "note": self.note}


def tail_threshold(values: np.ndarray, quantile: float, seed: int = 0) -> TailThreshold:
    """The ``quantile`` of the normal scores ``values``: by a generalised Pareto tail where the data do not resolve
    it (:func:`needs_tail`) and enough excesses allow a fit, else empirically (``note`` says which and why)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    empirical = float(np.quantile(v, quantile))
    if quantile >= 1.0:  # the largest score itself: no tail has a finite 1 quantile to offer
        note = "empirical: the largest normal score (quantile 1)"
    elif not needs_tail(v.size, quantile):
        note = f"empirical: {v.size} normal scores resolve the {quantile:g} quantile"
    elif (fit := fit_tail(v)) is None:
        note = (f"empirical: {v.size} normal scores are too few for a tail fit (it needs {MIN_EXCEEDANCES} excesses, "
                f"at most {MAX_TAIL_SHARE:g} of the scores)")
    else:
        threshold = fit.quantile(quantile)
        low, high = _bootstrap_interval(v, fit, threshold, seed)
        return TailThreshold(threshold, fit, _above(v, threshold), low, high,
                             note=f"generalised Pareto tail of the {fit.exceedances} largest of {fit.n} normal scores")
    return TailThreshold(empirical, None, _above(v, empirical), note=note)


def _above(v: np.ndarray, threshold: float) -> int:
    return int((v > threshold).sum())


def _bootstrap_interval(v: np.ndarray, fit: TailFit, threshold: float, seed: int) -> tuple[float, float]:
    """The central 95% interval of the share of normal scores above ``threshold``, over refits of the tail to
    resamples (with replacement) of all ``v``."""
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(BOOTSTRAP):
        refit = fit_tail(rng.choice(v, v.size, replace=True))
        if refit is not None:
            rates.append(refit.exceedance(threshold))
    if not rates:
        return float("nan"), float("nan")
    return float(np.quantile(rates, 0.025)), float(np.quantile(rates, 0.975))
