"""Building blocks shared by the evaluation statistics: intervals and the prompt bootstrap.

Pure numpy/scipy; no Django. The public names are re-exported from ``evaluation.stats``.

The bootstrap is vectorized: one ``(n_resamples, n)`` integer draw per sample size is turned
into a matrix of resample counts, and every statistic that is a sum over prompts (or items) is
then one matrix product. The draw is the one ``scipy.stats.bootstrap`` makes for a single
sample or a paired sample (``rng.integers(0, n, (n_resamples, n))``), so with the same seed the
bootstrap distributions, and hence the intervals, agree with scipy's.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import norm

__all__ = [
    "BootstrapInterval",
    "Interval",
    "PromptBootstrap",
    "Steps",
    "bootstrap_interval",
    "minimal_detectable_difference",
    "run_with_bootstrap",
    "wilson_interval",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[low, high]`` on the scale of its statistic."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (end points included)."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class BootstrapInterval(Interval):
    """A bootstrap confidence interval and the method that produced it ("BCa" or "percentile")."""

    method: str = "percentile"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval | None:
    """Wilson score interval for a binomial proportion (Wilson 1927, JASA 22:209-212).

    ``(p̂ + z²/2n ± z·sqrt(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z = Φ⁻¹(1 - α/2)``.
    Same numbers as ``statsmodels proportion_confint(method='wilson')``. ``None`` when n = 0.
    """
    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"successes={successes} and n={n} must satisfy 0 <= successes <= n")
    if n == 0:
        return None
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p_hat = successes / n
    denominator = 1 + z * z / n
    center = (p_hat + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / denominator
    # At p̂ = 0 or 1 one end is exactly 0 or 1 in theory; do not report the rounding error.
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == n else min(1.0, center + half_width)
    return Interval(low, high)


@dataclass
class PromptBootstrap:
    """Resample counts for a nonparametric bootstrap over prompts (Efron & Tibshirani 1993, ch. 6).

    ``counts(n)`` is a ``(n_resamples, n)`` float matrix whose row ``b`` says how often each
    prompt appears in resample ``b``. It is drawn once per ``n`` and cached, so every statistic
    over the same prompts in one report uses the same resamples (each marginal interval is an
    ordinary bootstrap interval; jointly they keep the correlation between statistics).

    A prompt is the resampling unit: all of a prompt's votes (or questions) travel together,
    which is the cluster bootstrap a vote-level analysis needs.

    Memory: ``8 · n_resamples · n`` bytes per sample size (48 MB for 10,000 × 600).
    """

    n_resamples: int = 10_000
    seed: int | None = 0
    _cache: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {self.n_resamples}")

    def counts(self, n: int) -> np.ndarray:
        """Resample counts for ``n`` units; same draw as ``scipy.stats.bootstrap(rng=default_rng(seed))``."""
        if n < 1:
            raise ValueError(f"the bootstrap needs at least one unit, got n={n}")
        cached = self._cache.get(n)
        if cached is None:
            rng = np.random.default_rng(self.seed)
            indices = rng.integers(0, n, (self.n_resamples, n))
            indices += np.arange(self.n_resamples, dtype=indices.dtype)[:, None] * n
            flat = np.bincount(indices.ravel(), minlength=self.n_resamples * n)
            cached = flat.reshape(self.n_resamples, n).astype(np.float64)
            self._cache[n] = cached
        return cached

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-resample sums of per-unit ``values`` (shape ``(n,)`` or ``(n, k)``) via one matmul."""
        values = np.asarray(values, dtype=np.float64)
        return self.counts(values.shape[0]) @ values

    def means(self, values: np.ndarray) -> np.ndarray:
        """Per-resample means of per-unit ``values`` (shape ``(n,)`` or ``(n, k)``)."""
        values = np.asarray(values, dtype=np.float64)
        return self.sums(values) / values.shape[0]

    def sums_many(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``sums`` of several arrays with one matrix product per number of units.

        The product is bound by reading the ``(n_resamples, n)`` counts from memory, so
        stacking the columns of a whole report into one product is what makes it fast.
        """
        arrays = [np.asarray(values, dtype=np.float64) for values in arrays]
        results: list[np.ndarray | None] = [None] * len(arrays)
        by_size: dict[int, list[int]] = {}
        for index, values in enumerate(arrays):
            by_size.setdefault(values.shape[0], []).append(index)
        for size, indices in by_size.items():
            columns = [arrays[i].reshape(size, -1) for i in indices]
            # Statistics often share columns (category counts of κ and α); multiply each once.
            unique, inverse = np.unique(np.hstack(columns), axis=1, return_inverse=True)
            stacked = (self.counts(size) @ unique)[:, inverse.reshape(-1)]
            start = 0
            for i, block in zip(indices, columns):
                width = block.shape[1]
                piece = stacked[:, start:start + width]
                results[i] = piece[:, 0] if arrays[i].ndim == 1 else piece
                start += width
        return [result for result in results if result is not None]


Steps = Generator[list[np.ndarray], list[np.ndarray], T]
"""A statistic written as a generator: it yields the per-unit arrays it needs bootstrap sums of,
receives those sums (in order), and returns its result."""


def run_with_bootstrap(steps: Sequence[Steps[T]], bootstrap: PromptBootstrap) -> list[T]:
    """Run statistics written as ``Steps``, batching their bootstrap sums (``sums_many``).

    Each round collects what every unfinished statistic asks for, computes all of it with one
    matrix product per number of units, and hands each statistic its share.
    """
    results: list[T | None] = [None] * len(steps)
    requests: dict[int, list[np.ndarray]] = {}

    def advance(index: int, sent: list[np.ndarray] | None) -> None:
        try:
            requests[index] = steps[index].send(sent)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[index] = stop.value

    for index in range(len(steps)):
        advance(index, None)
    while requests:
        pending = list(requests.items())
        requests.clear()
        sums = bootstrap.sums_many([values for _, wanted in pending for values in wanted])
        start = 0
        for index, wanted in pending:
            advance(index, sums[start:start + len(wanted)])
            start += len(wanted)
    return results  # type: ignore[return-value]


def bootstrap_interval(
    estimate: float,
    distribution: np.ndarray,
    jackknife: np.ndarray | None,
    confidence: float = 0.95,
) -> BootstrapInterval:
    """Two-sided BCa interval, or the percentile interval where BCa degenerates.

    BCa follows Efron & Tibshirani (1993), eq. 14.10 (bias correction ``z0`` from the share
    of bootstrap values below the estimate) and eq. 14.15 (acceleration from the jackknife
    values), in the form ``scipy.stats.bootstrap(method='BCa')`` implements, including its
    mid-rank share and linear quantiles. BCa is undefined when the jackknife values are all
    equal (no acceleration) or the estimate lies outside the bootstrap distribution
    (infinite bias correction); scipy returns NaN there, this returns the percentile interval
    ``[q(α/2), q(1-α/2)]`` (Efron & Tibshirani 1993, eq. 13.5) and says so in ``method``.
    ``jackknife=None`` asks for the percentile interval directly.
    """
    _check_confidence(confidence)
    distribution = np.asarray(distribution, dtype=np.float64)
    alpha = (1 - confidence) / 2
    levels = (alpha, 1 - alpha)
    method = "percentile"
    if jackknife is not None:
        bca_levels = _bca_levels(estimate, distribution, np.asarray(jackknife, np.float64), alpha)
        if bca_levels is not None:
            levels, method = bca_levels, "BCa"
    low, high = np.quantile(distribution, levels, method="linear")
    return BootstrapInterval(float(low), float(high), method=method)


def _bca_levels(
    estimate: float, distribution: np.ndarray, jackknife: np.ndarray, alpha: float
) -> tuple[float, float] | None:
    scale = max(1.0, abs(estimate))
    # Statistics computed by different summation orders differ in the last bits; count those as ties.
    equal = np.isclose(distribution, estimate, rtol=0.0, atol=1e-12 * scale)
    below = np.count_nonzero((distribution < estimate) & ~equal)
    share = (2 * below + np.count_nonzero(equal)) / (2 * distribution.size)
    if not 0.0 < share < 1.0:
        return None
    z0 = float(ndtri(share))
    n = jackknife.size
    if n < 2:
        return None
    spread = (n - 1) * (jackknife.mean() - jackknife)
    denominator = float(np.sum(spread**2) / n**2)
    if denominator <= 0.0:
        return None
    acceleration = float(np.sum(spread**3) / n**3) / (6 * denominator**1.5)
    z_alpha = float(ndtri(alpha))
    levels = []
    for z in (z_alpha, -z_alpha):
        shifted = z0 + z
        levels.append(float(ndtr(z0 + shifted / (1 - acceleration * shifted))))
    if not all(math.isfinite(level) and 0.0 <= level <= 1.0 for level in levels):
        return None
    return levels[0], levels[1]


def minimal_detectable_difference(
    differences: Sequence[float] | np.ndarray, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest mean paired difference detectable at this n: ``(z₁₋α/₂ + z_power)·s/√n``.

    ``s`` is the sample standard deviation (ddof = 1) of the paired differences; this is the
    normal-approximation power formula of a paired test (e.g. Chow, Shao & Wang 2008, §3.1).
    ``None`` below 2 differences, where ``s`` is undefined.
    """
    values = np.asarray(differences, dtype=np.float64)
    if values.size < 2:
        return None
    spread = float(values.std(ddof=1))
    return (float(norm.ppf(1 - alpha / 2)) + float(norm.ppf(power))) * spread / math.sqrt(values.size)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
