"""The calibration of a model's named scores on normal validation images (numpy only: usable without torch).

It normalises scores, decides normal/anomalous, scales heat maps for display, and records which score
was selected as the default and on what evidence. Fitting it needs only score matrices:
:func:`fit_calibration`; :mod:`scgan.inference.calibrate` produces them from a model and normal images.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


def exceeds(values: np.ndarray | float, threshold: float) -> np.ndarray:
    """True where a score is above ``threshold``, and where it is not a finite number: a score that is nan or
    infinite (a broken model, an input it overflows on) is never called normal. Fails closed the same way for a
    nan threshold."""
    v = np.asarray(values, dtype=np.float64)
    return ~(np.isfinite(v) & (v <= threshold))

# Heat-map colours. 0 (blue) is the HEAT_LOW_QUANTILE quantile of every normal validation pixel; HEAT_AT_THRESHOLD
# (green on "jet") is the map's own threshold: the calibration quantile of the normal validation images' largest map
# values, so that only 1 - quantile of them show anything past green anywhere; 1 (red) is as far again above it.
HEAT_LOW_QUANTILE = 0.9
HEAT_AT_THRESHOLD = 0.5
HEAT_SAMPLE = 4096  # normal pixels kept per validation image to fit heat_low (evenly spaced)


@dataclass(frozen=True)
class FalseAlarmEstimate:
    """What a threshold set on n normal images promises for new normal images: the share of them it will flag.

    Distribution-free (order statistics): a threshold at the k-th largest of n normal scores is exceeded by a new
    normal image's score with a chance that is Beta(k, n + 1 - k) distributed, whatever the scores' distribution;
    a threshold interpolated between two of them, by the mixture of the two. A threshold from a tail model
    (:mod:`scgan.calibration.tail`): the rate the fit gives, and the interval of its refits. ``expected`` is the mean,
    (``low``, ``high``) the central 95% interval; ``above``: how many of the n normal scores lie above the threshold;
    ``basis``: what else the estimate rests on, for a person ("" for the validation images alone)."""

    expected: float
    low: float
    high: float
    above: int
    n: int
    basis: str = ""

    def sentence(self) -> str:
        """One line for a person: the rate, its interval and what it rests on."""
        basis = f" ({self.basis})" if self.basis else ""
        return (f"false alarms expected on {100 * self.expected:.1f}% of normal images (95% interval "
                f"{100 * self.low:.1f}-{100 * self.high:.1f}%), from {self.n} normal image(s){basis}, {self.above} of "
                "them above the threshold")


def crossfit_basis(validation: int, crossfit: int) -> str:
    """What thresholds rest on beside ``validation`` normal validation images, for a person: "V validation, C training
    images scored cross-fitted" ("" where no training image was scored cross-fitted)."""
    return f"{validation} validation, {crossfit} training images scored cross-fitted" if crossfit else ""


def normal_images(validation: int, crossfit: int = 0) -> str:
    """The normal images thresholds rest on, for a person: "N normal validation image(s)", or with cross-fitted
    training images beside them "N normal images (V validation, C training images scored cross-fitted)"."""
    if not crossfit:
        return f"{validation} normal validation image(s)"
    return f"{validation + crossfit} normal images ({crossfit_basis(validation, crossfit)})"


def false_alarm_estimate(n: int, quantile: float, tail: dict | None = None, basis: str = "") -> FalseAlarmEstimate:
    """The false-alarm rate of a threshold at the ``quantile`` of ``n`` normal scores, as numpy interpolates it
    linearly between two of them (ties aside): :class:`FalseAlarmEstimate`. ``tail``: the threshold's record from
    :func:`scgan.calibration.tail.tail_threshold`; where it holds a fit, the fit's rate and interval instead."""
    from scipy.optimize import brentq  # scipy only here: the rest of this module is numpy alone
    from scipy.stats import beta

    if n < 1:
        return FalseAlarmEstimate(float("nan"), float("nan"), float("nan"), 0, 0)
    if tail and tail.get("fit"):
        fit = tail["fit"]
        basis = ", ".join(filter(None, [basis, f"a generalised Pareto tail of the {fit['exceedances']} largest"]))
        return FalseAlarmEstimate(float(1.0 - quantile), float(tail["low"]), float(tail["high"]), int(tail["above"]),
                                  n, basis)
    pos = (n - 1) * quantile
    j = min(int(np.floor(pos + 1e-9)), n - 1)  # the threshold lies between the j-th and (j+1)-th smallest (0-based)
    frac = max(pos - j, 0.0)
    above = n - 1 - j
    # Exceeding the j-th smallest: Beta(n - j, j + 1); the (j+1)-th: Beta(n - j - 1, j + 2) (none above it: j = n-1).
    parts = [(1 - frac, beta(n - j, j + 1))] + ([(frac, beta(n - j - 1, j + 2))] if frac > 1e-9 else [])

    def cdf(p: float) -> float:
        return sum(w * d.cdf(p) for w, d in parts)

    expected = sum(w * d.mean() for w, d in parts)
    low, high = (brentq(lambda p, a=a: cdf(p) - a, 0.0, 1.0) for a in (0.025, 0.975))
    return FalseAlarmEstimate(float(expected), float(low), float(high), int(above), n, basis)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) central ``level`` interval of a rate seen k times in n trials: (0, 1) for n = 0."""
    from scipy.stats import beta

    if n < 1:
        return 0.0, 1.0
    a = (1.0 - level) / 2
    low = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k >= n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return low, high


def threshold_false_alarms(normal: np.ndarray, threshold: float) -> FalseAlarmEstimate:
    """The false-alarm rate of ``threshold`` on new normal images, from the normal scores it was set with: as
    :func:`false_alarm_estimate` for a threshold at the order statistic just below it (distribution-free)."""
    normal = np.asarray(normal, dtype=np.float64)
    n = normal.size
    above = int(exceeds(normal, threshold).sum())
    if n < 2:
        return false_alarm_estimate(n, 1.0 - above)
    return false_alarm_estimate(n, (n - 1 - above) / (n - 1)) if above < n else FalseAlarmEstimate(
        1.0 - 1.0 / (n + 1), *clopper_pearson(n, n), above, n)


@dataclass(frozen=True)
class TargetThreshold:
    """A threshold set from normal and defective images' scores for a target catch rate or false-alarm rate, and the
    rates it implies: ``caught`` of ``n_defects`` defects above it (Clopper-Pearson 95% interval ``catch_low`` -
    ``catch_high``), and the false alarms on new normal images (:func:`threshold_false_alarms`). ``refusal``: the
    target is not met even on these images (which one, and why); ``warning``: met on them, but too few images to
    show it."""

    threshold: float
    target: str  # "catch" or "false_alarms"
    goal: float
    caught: int
    n_defects: int
    catch_low: float
    catch_high: float
    false_alarms: FalseAlarmEstimate
    refusal: str | None = None
    warning: str | None = None

    def lines(self) -> list[str]:
        """What the threshold implies, for a person: the catch rate and the false-alarm rate with their intervals."""
        n = self.n_defects
        catch = (f"catch rate {100 * self.caught / max(n, 1):.0f}% ({self.caught} of {n} defective images above "
                 f"it; 95% interval {100 * self.catch_low:.0f}-{100 * self.catch_high:.0f}%, Clopper-Pearson)")
        return [f"threshold {self.threshold:.6g} for a {self.target.replace('_', '-')} target of "
                f"{100 * self.goal:g}%", catch, self.false_alarms.sentence()]

    def record(self) -> dict:
        """The rule as the calibration stores it."""
        return {"target": self.target, "goal": self.goal, "caught": self.caught, "n_defects": self.n_defects,
                "above": self.false_alarms.above, "n_normal": self.false_alarms.n}


def _images_to_show(goal: float) -> int:
    """Defective images, all caught, whose 95% interval's lower end reaches ``goal``."""
    return int(np.ceil(np.log(0.025) / np.log(goal))) if goal < 1 else 10**9


def target_threshold(normal: np.ndarray, defects: np.ndarray, catch: float | None = None,
                     false_alarms: float | None = None) -> TargetThreshold:
    """The threshold on one score that catches the share ``catch`` of ``defects`` (as high as it can be: halfway
    between the defect it must catch and the next lower score), or that leaves the share ``false_alarms`` of the
    ``normal`` scores above it (on average over new normal images: at the highest normal score that at most
    (n + 1) false_alarms - 1 normal scores exceed, by :func:`threshold_false_alarms`); one of the two."""
    normal, defects = np.asarray(normal, np.float64).ravel(), np.asarray(defects, np.float64).ravel()
    if (catch is None) == (false_alarms is None):
        raise ValueError("give one target: --catch RATE or --false-alarms RATE")
    goal = float(catch if catch is not None else false_alarms)
    if not 0.0 < goal < 1.0 if false_alarms is not None else not 0.0 < goal <= 1.0:
        raise ValueError(f"the target rate must be in (0, 1), got {goal}")
    if normal.size == 0 or defects.size == 0:
        raise ValueError("a threshold from defects needs normal and defective images' scores")
    if catch is not None:
        k = max(1, int(np.ceil(catch * defects.size - 1e-9)))
        must = np.sort(defects)[::-1][k - 1]
        lower = np.concatenate([normal, defects])
        lower = lower[lower < must]
        threshold = float((must + lower.max()) / 2) if lower.size else float(np.nextafter(must, -np.inf))
    else:
        above = int(np.floor(false_alarms * (normal.size + 1) + 1e-9)) - 1  # the expected rate is (above + 1) / (n + 1)
        threshold = float(np.sort(normal)[normal.size - 1 - max(above, 0)])
    caught = int(exceeds(defects, threshold).sum())
    low, high = clopper_pearson(caught, defects.size)
    fa = threshold_false_alarms(normal, threshold)
    refusal = warning = None
    if catch is not None and low < catch:
        warning = (f"the catch-rate target {100 * catch:g}% is met on these {defects.size} defective images but "
                   f"they cannot show it (95% interval {100 * low:.0f}-{100 * high:.0f}%): about "
                   f"{_images_to_show(catch)} defective images, all caught, would show it")
    if false_alarms is not None and fa.expected > false_alarms + 1e-12:
        refusal = (f"the false-alarm target {100 * false_alarms:g}% cannot be met with {normal.size} normal images "
                   f"(even above all of them {100 * fa.expected:.1f}% of new normal images are expected above the "
                   f"threshold): give at least {int(np.ceil(1 / false_alarms - 1 - 1e-9))} normal images")
    elif false_alarms is not None and fa.high > false_alarms:
        warning = (f"the false-alarm target {100 * false_alarms:g}% is expected but not shown by {normal.size} "
                   f"normal images (95% interval up to {100 * fa.high:.1f}%)")
    return TargetThreshold(threshold, "catch" if catch is not None else "false_alarms", goal, caught, defects.size,
                           low, high, fa, refusal, warning)


def preference_order(names: Sequence[str], preference: Sequence[str] = ()) -> list[str]:
    """``names`` in ``preference`` order (a model kind's ``score_preference``; unlisted names last, in their given
    order)."""
    rank = {n: i for i, n in enumerate(preference)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), list(names).index(n)))


@dataclass
class ScoreStats:
    """Statistics of one score on normal validation images."""

    min: float
    max: float
    mean: float
    std: float
    threshold: float  # the calibration quantile of the normal scores (validation, plus cross-fitted ones if any)


@dataclass
class Calibration:
    """Normalisation and thresholds fitted on normal images only: the validation images (and, for the thresholds
    where score.threshold_source = crossfit, the training images each scored by a model fitted without it)."""

    quantile: float
    n_images: int
    scores: dict[str, ScoreStats] = field(default_factory=dict)
    map_high: float = 1.0  # heat maps are shown as clip(map / map_high, 0, 1)
    # "auto" default score: each score's AUROC of normal validation images against the same images
    # with synthetic defects, and the score that separates them best (None: not fitted).
    selection: dict[str, float] = field(default_factory=dict)
    selection_margin: dict[str, float] = field(default_factory=dict)  # breaks AUROC ties (it saturates at 1)
    selected_score: str | None = None
    # With other defect strengths than full: each strength's AUROCs ({"0.25": {score: AUROC}}); ``selection``
    # and ``selection_margin`` are then their means over the strengths. Empty: full-strength defects only.
    selection_by_strength: dict[str, dict[str, float]] = field(default_factory=dict)
    # Smoothing sigma (pixels at S) of the anomaly maps these statistics were fitted with; map_max and
    # map_high are only valid with it. ``sigma_selection``: pixel AUROC of each candidate sigma on the
    # synthetic defects when it was chosen on validation images (score.sigma = auto), else empty.
    sigma: float | None = None
    sigma_selection: dict[str, float] = field(default_factory=dict)
    # The heat-map scale in map units (see HEAT_LOW_QUANTILE): heat = HEAT_AT_THRESHOLD x (map - heat_low) /
    # (heat_threshold - heat_low), clipped to [0, 1]. None in files written before it was fitted: heat is then
    # clip(map / map_high, 0, 1), as those models always showed it.
    heat_low: float | None = None
    heat_threshold: float | None = None
    # Set when the default score's threshold came from defective images for a target rate (TargetThreshold.record),
    # not from the quantile; empty otherwise.
    threshold_rule: dict = field(default_factory=dict)
    # score.threshold_source = crossfit: how many normal training images, each scored by a bank fitted without it,
    # the thresholds rest on beside the n_images validation ones (0: the validation images alone).
    n_crossfit: int = 0
    # The normal scores the thresholds rest on, by source ("validation", "crossfit") and score, kept where they are more
    # than the validation quantile (cross-fitted scores or a tail model) so that recalibrating need not score them
    # again; empty otherwise (the model file keeps the validation images themselves).
    normal_scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # score.tail = gpd: each score's threshold record (scgan.calibration.tail.TailThreshold.record); empty otherwise.
    tails: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(
            quantile=float(d["quantile"]),
            n_images=int(d["n_images"]),
            scores={k: ScoreStats(**{kk: float(vv) for kk, vv in v.items()}) for k, v in d["scores"].items()},
            map_high=float(d["map_high"]),
            selection={k: float(v) for k, v in (d.get("selection") or {}).items()},
            selection_margin={k: float(v) for k, v in (d.get("selection_margin") or {}).items()},
            selected_score=d.get("selected_score"),
            selection_by_strength={str(a): {k: float(v) for k, v in row.items()}
                                   for a, row in (d.get("selection_by_strength") or {}).items()},
            sigma=None if d.get("sigma") is None else float(d["sigma"]),
            sigma_selection={str(k): float(v) for k, v in (d.get("sigma_selection") or {}).items()},
            heat_low=None if d.get("heat_low") is None else float(d["heat_low"]),
            heat_threshold=None if d.get("heat_threshold") is None else float(d["heat_threshold"]),
            threshold_rule=dict(d.get("threshold_rule") or {}),
            n_crossfit=int(d.get("n_crossfit") or 0),
            normal_scores={str(src): {str(k): [float(x) for x in v] for k, v in row.items()}
                           for src, row in (d.get("normal_scores") or {}).items()},
            tails={str(k): dict(v) for k, v in (d.get("tails") or {}).items()},
        )

    def resolve(self, default_score: str, preference: Sequence[str] = ()) -> str:
        """The config's default score, with "auto" replaced by the validation-selected one (else the score the
        calibration has that comes first in ``preference``, the model kind's)."""
        if default_score != "auto":
            return default_score
        return self.selected_score or preference_order(list(self.scores), preference)[0]

    def normalize(self, name: str, values: np.ndarray) -> np.ndarray:
        """Min-max normalise with the validation range: normal images fall in about [0, 1], anomalies above."""
        s = self.scores[name]
        return (np.asarray(values, dtype=np.float64) - s.min) / max(s.max - s.min, 1e-12)

    def threshold_normalized(self, name: str) -> float:
        """The score's threshold on the normalised scale (at most 1 where the threshold is a quantile of the same
        validation scores the normalisation spans; above 1 where it was set from defects above every one of them)."""
        return float(self.normalize(name, np.array([self.scores[name].threshold]))[0])

    def normal_values(self, name: str) -> np.ndarray | None:
        """Every normal score of ``name`` the thresholds rest on (validation, then cross-fitted), where the calibration
        keeps them; else None (score the kept validation images again)."""
        kept = [row[name] for row in self.normal_scores.values() if name in row]
        return np.concatenate([np.asarray(v, dtype=np.float64) for v in kept]) if kept else None

    @property
    def n_normal(self) -> int:
        """Every normal image the thresholds rest on: the validation ones and the cross-fitted training ones."""
        return self.n_images + self.n_crossfit

    def basis(self) -> str:
        """What the thresholds rest on beside the validation images, for a person ("" for those alone)."""
        return crossfit_basis(self.n_images, self.n_crossfit)

    def false_alarms(self, score: str | None = None) -> FalseAlarmEstimate:
        """The false-alarm rate the thresholds promise on new normal images, with what it rests on (for a threshold
        set from defects, the number of normal validation images above it; for ``score``'s threshold from a tail
        model, the fit's rate and interval)."""
        rule = self.threshold_rule
        if rule.get("n_normal"):
            n, above = int(rule["n_normal"]), int(rule["above"])
            return threshold_false_alarms(np.arange(n, dtype=np.float64), n - above - 0.5)  # ``above`` of n above it
        tail = self.tails.get(score or self.selected_score or "")
        return false_alarm_estimate(self.n_normal, self.quantile, tail, self.basis())

    def decide(self, name: str, values: np.ndarray) -> np.ndarray:
        """True where the score exceeds the validation threshold (anomalous), or is not finite (see :func:`exceeds`)."""
        return exceeds(values, self.scores[name].threshold)

    def nonfinite(self) -> str | None:
        """The first stored number that is nan or infinite ("l_con.threshold is nan"), or None: such a calibration
        cannot decide anything."""
        values = {"map_high": self.map_high, **({"sigma": self.sigma} if self.sigma is not None else {})}
        values.update({k: v for k in ("heat_low", "heat_threshold") if (v := getattr(self, k)) is not None})
        for score, stats in self.scores.items():
            values.update({f"{score}.{k}": v for k, v in vars(stats).items()})
        return next((f"{key} is {value}" for key, value in values.items() if not np.isfinite(value)), None)

    @property
    def heat_fitted(self) -> bool:
        """True when the heat scale was fitted on normal pixels (False: a model file older than it)."""
        return self.heat_low is not None and self.heat_threshold is not None

    def heat_range(self) -> tuple[float, float]:
        """The map values shown as 0 (blue) and 1 (red)."""
        if not self.heat_fitted:
            return 0.0, max(self.map_high, 1e-12)
        span = max(self.heat_threshold - self.heat_low, 1e-12 * max(1.0, abs(self.heat_threshold)))
        return self.heat_low, self.heat_low + span / HEAT_AT_THRESHOLD

    def heat(self, amap: np.ndarray) -> np.ndarray:
        """An anomaly map (model units) as display heat in [0, 1]: normal validation pixels at the blue end (0), the
        map's threshold at HEAT_AT_THRESHOLD (green); a model file older than this scale: map / map_high."""
        lo, hi = self.heat_range()
        return np.clip((np.asarray(amap, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)

    def heat_ticks(self) -> list[tuple[float, str]]:
        """(heat, label) for a colour bar: what the colours mean for this model, in its map's units."""
        lo, hi = self.heat_range()
        if not self.heat_fitted:
            return [(0.0, "0"), (1.0, f"{hi:.3g}")]
        return [(0.0, f"{lo:.3g} normal"), (HEAT_AT_THRESHOLD, f"{self.heat_threshold:.3g} threshold"),
                (1.0, f"{hi:.3g}")]

    def heat_legend(self) -> str:
        """One sentence saying what the heat-map colours mean for this model."""
        lo, hi = self.heat_range()
        if not self.heat_fitted:
            return (f"heat = map value / {hi:.3g}, clipped to [0, 1]: blue 0, red {hi:.3g} and above "
                    "(a model file from before the colours were fitted; 'scgan calibrate' fits them)")
        share = 100 * HEAT_LOW_QUANTILE
        q = 100 * self.quantile
        return (f"blue: {lo:.3g} or less, where {share:g}% of normal validation pixels lie; green: the map's "
                f"threshold {self.heat_threshold:.3g}, which the map of {q:g}% of normal validation images never "
                f"exceeds; red: {hi:.3g} or more")


def heat_sample(amap: np.ndarray, n: int = HEAT_SAMPLE) -> np.ndarray:
    """About ``n`` evenly spaced pixels of one map (all of a smaller one), float64."""
    flat = np.asarray(amap, dtype=np.float64).ravel()
    return flat[:: max(1, flat.size // n)]


def add_shown_maps(maps: np.ndarray, pixels: list[np.ndarray], maxima: list[float]) -> None:
    """Append each shown map's (N, H, W) pixel sample (:func:`heat_sample`) to ``pixels`` and its largest value to
    ``maxima``: what :func:`heat_scale` fits the heat scale from."""
    for m in maps:
        maxima.append(float(m.max()))
        pixels.append(heat_sample(m))


def heat_scale(pixels: Sequence[np.ndarray], maxima: np.ndarray, quantile: float) -> tuple[float, float]:
    """(heat_low, heat_threshold) from normal validation maps: ``pixels`` one sample per image
    (:func:`heat_sample`), ``maxima`` each map's largest value; ``quantile`` is the calibration's."""
    pooled = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in pixels])
    if pooled.size == 0 or np.size(maxima) == 0:
        raise ValueError("the heat scale needs at least one normal validation map")
    return float(np.quantile(pooled, HEAT_LOW_QUANTILE)), float(np.quantile(np.asarray(maxima, np.float64), quantile))


def fit_calibration(scores: np.ndarray, names: Sequence[str], quantile: float,
                    synthetic: np.ndarray | dict[float, np.ndarray] | None = None,
                    map_high: float | None = None, heat: tuple[float, float] | None = None,
                    preference: Sequence[str] = (), crossfit: np.ndarray | None = None,
                    tail: str = "none") -> Calibration:
    """Calibration from validation scores (N, K), columns named ``names`` (normal images only).

    ``map_high`` is the largest anomaly-map value on these images (default: the largest map_max); ``heat`` is
    (heat_low, heat_threshold) from :func:`heat_scale` (None: heat maps are shown as map / map_high).

    ``synthetic`` (M, K) are the scores of the same normal images with synthetic defects pasted in, or
    {strength: (M, K)} for defects blended in at several strengths; when given, the score that separates
    them best from the normal ones (mean AUROC over the strengths) becomes ``selected_score``. No real
    anomaly and no test image is involved. Where scores separate them equally well, the earlier in
    ``preference`` (the model kind's) wins.

    ``crossfit`` (C, K): normal training images' scores, each from a model fitted without it; the thresholds are then
    the quantile of both sets together (the normalisation and the heat scale stay the validation images'). ``tail``
    = "gpd": each threshold by :func:`scgan.calibration.tail.tail_threshold` where the quantile lies beyond what the
    normal scores resolve. Either keeps the normal scores in ``normal_scores``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    names = tuple(names)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError("calibration needs at least one normal validation image")
    if scores.shape[1] != len(names):
        raise ValueError(f"{scores.shape[1]} score columns but {len(names)} names")
    extra = np.zeros((0, len(names))) if crossfit is None else np.asarray(crossfit, dtype=np.float64)
    if extra.ndim != 2 or extra.shape[1] != len(names):
        raise ValueError(f"cross-fitted scores of shape {extra.shape}, not (C, {len(names)})")
    tails = {}
    if tail == "gpd":  # imported here: the tail needs scipy, as false_alarm_estimate does
        from scgan.calibration.tail import tail_threshold

        tails = {name: tail_threshold(np.concatenate([col, ext]), quantile).record()
                 for name, col, ext in zip(names, scores.T, extra.T)}
    stats = {
        name: ScoreStats(
            min=float(col.min()), max=float(col.max()), mean=float(col.mean()), std=float(col.std()),
            threshold=float(tails[name]["threshold"] if tails else np.quantile(np.concatenate([col, ext]), quantile)),
        )
        for name, col, ext in zip(names, scores.T, extra.T)
    }
    if map_high is None:
        map_high = stats["map_max"].max if "map_max" in stats else 1.0
    cal = Calibration(quantile=quantile, n_images=scores.shape[0], scores=stats, map_high=float(map_high),
                      n_crossfit=int(extra.shape[0]), tails=tails)
    if crossfit is not None or tails:
        cal.normal_scores = {"validation": {n: col.tolist() for n, col in zip(names, scores.T)}}
        if crossfit is not None:
            cal.normal_scores["crossfit"] = {n: col.tolist() for n, col in zip(names, extra.T)}
    if heat is not None:
        cal.heat_low, cal.heat_threshold = float(heat[0]), float(heat[1])
    levels = synthetic if isinstance(synthetic, dict) else {1.0: synthetic}
    levels = {a: np.asarray(v, dtype=np.float64) for a, v in levels.items() if v is not None and len(v)}
    if levels:
        aurocs = {a: separation_auroc(scores, v, names) for a, v in levels.items()}
        margins = [separation_margin(scores, v, names) for v in levels.values()]
        cal.selection = {n: float(np.mean([row[n] for row in aurocs.values()])) for n in names}
        cal.selection_margin = {n: float(np.mean([row[n] for row in margins])) for n in names}
        if set(levels) != {1.0}:  # say which strengths the choice used unless it is full strength only
            cal.selection_by_strength = {f"{a:g}": row for a, row in aurocs.items()}
        # AUROC first; where it ties (easy synthetic defects saturate it at 1), the larger standardised
        # margin; then the kind's preference order.
        order = preference_order(names, preference)
        cal.selected_score = max(order, key=lambda n: (
            round(cal.selection[n], 9), cal.selection_margin[n], -order.index(n)))
    return cal


def separation_margin(normal: np.ndarray, synthetic: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per score, (mean synthetic - mean normal) / std normal: how far defects stand out, in normal spreads."""
    spread = normal.std(axis=0) + 1e-12 * (np.abs(normal).mean(axis=0) + 1.0)
    d = (synthetic.mean(axis=0) - normal.mean(axis=0)) / spread
    return {name: float(v) for name, v in zip(names, d)}


def separation_auroc(normal: np.ndarray, synthetic: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per score, the probability that a synthetic-defect image outscores a normal one (ties count half)."""
    out = {}
    for i, name in enumerate(names):
        a, b = normal[:, i][:, None], synthetic[:, i][None, :]
        out[name] = float(((b > a).sum() + 0.5 * (b == a).sum()) / (a.size * b.size))
    return out
