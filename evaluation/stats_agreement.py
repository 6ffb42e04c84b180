"""Inter-annotator agreement: Fleiss' κ, Krippendorff's α (nominal), per-annotator scores.

Agreement is computed from an items × categories table of vote counts (``vote_table``). Both
coefficients are ratios of sums over items, so the bootstrap over items is one matrix product
of resample counts with per-item contributions (``PromptBootstrap``). Public names are
re-exported from ``evaluation.stats``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evaluation.stats_core import (
    BootstrapInterval,
    Interval,
    PromptBootstrap,
    Steps,
    bootstrap_interval,
    run_with_bootstrap,
    wilson_interval,
)

__all__ = [
    "AgreementSummary",
    "AnnotatorScore",
    "agreement_steps",
    "annotator_majority_agreement",
    "fleiss_kappa",
    "gold_accuracy",
    "krippendorff_alpha_nominal",
    "summarize_agreement",
    "vote_table",
]

Judgment = tuple[str, str, str]
"""(item id, annotator id, label)."""


def vote_table(votes: Sequence[Sequence[str]], categories: Sequence[str]) -> np.ndarray:
    """Items × categories matrix of vote counts from per-item vote lists."""
    column = {category: index for index, category in enumerate(categories)}
    table = np.zeros((len(votes), len(categories)), dtype=np.int64)
    for item, item_votes in enumerate(votes):
        for vote in item_votes:
            if vote not in column:
                raise ValueError(f"item {item}: vote {vote!r} is not one of {list(categories)}")
            table[item, column[vote]] += 1
    return table


def fleiss_kappa(table: np.ndarray) -> float | None:
    """Fleiss' κ (Fleiss 1971, Psychol. Bull. 76:378) for a constant number of raters per item.

    ``κ = (P̄ − P̄e)/(1 − P̄e)`` with ``P̄`` the mean pairwise agreement per item and ``P̄e`` the
    sum of squared category shares. ``None`` when ``P̄e = 1`` (every vote in one category).
    """
    table = _check_table(table)
    raters = _constant_raters(table)
    sums = _fleiss_contributions(table, raters).sum(axis=0)
    value = _fleiss_from_sums(sums[None, :], raters)[0]
    return float(value) if np.isfinite(value) else None


def krippendorff_alpha_nominal(table: np.ndarray) -> float | None:
    """Krippendorff's α for nominal data from an items × categories count table.

    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", §C: with the
    coincidence matrix ``o_ck = Σ_u n_uc (n_uk − δ_ck)/(m_u − 1)`` over pairable items
    (``m_u ≥ 2`` values), ``n_c = Σ_k o_ck`` and ``n = Σ_c n_c``,
    ``α = 1 − (n − 1)·(n − Σ_c o_cc) / (n² − Σ_c n_c²)``. Items may have different numbers
    of values (missing votes). ``None`` when there are no pairable values or no variation.
    """
    table = _check_table(table)
    contributions = _alpha_contributions(table)
    if contributions.shape[0] == 0:
        return None
    value = _alpha_from_sums(contributions.sum(axis=0)[None, :])[0]
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True)
class AgreementSummary:
    """Agreement among annotators over the items of one criterion, with bootstrap CIs."""

    n_items: int
    n_votes: int
    fleiss_kappa: float | None
    kappa_ci: BootstrapInterval | None
    krippendorff_alpha: float | None
    alpha_ci: BootstrapInterval | None
    confidence: float
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (nested intervals become ``{"low", "high", "method"}``)."""
        return asdict(self)


def summarize_agreement(
    table: np.ndarray,
    confidence: float = 0.95,
    *,
    bootstrap: PromptBootstrap | None = None,
) -> AgreementSummary:
    """Fleiss' κ and Krippendorff's α with bootstrap CIs over items (BCa, percentile fallback).

    Resampling items keeps each item's votes together. Fleiss' κ needs the same number of
    votes on every item; otherwise it is ``None`` and ``message`` says so (α still applies).
    Resamples where a coefficient is undefined (no variation at all) are dropped and counted.
    """
    bootstrap = bootstrap if bootstrap is not None else PromptBootstrap()
    return run_with_bootstrap([agreement_steps(table, confidence)], bootstrap)[0]


def agreement_steps(table: np.ndarray, confidence: float = 0.95) -> Steps[AgreementSummary]:
    """``summarize_agreement`` as ``Steps``, so that a report can batch its bootstrap sums."""
    table = _check_table(table)
    messages: list[str] = []
    n_items = table.shape[0]
    raters = np.unique(table.sum(axis=1))
    kappa_contributions: np.ndarray | None = None
    if n_items == 0:
        messages.append("No items: agreement is undefined.")
    elif raters.size != 1:
        messages.append(
            f"Items have different numbers of votes ({raters.min():g} to {raters.max():g}): "
            "Fleiss' κ needs a constant number; see Krippendorff's α."
        )
    elif raters[0] < 2:
        messages.append("Fewer than 2 votes per item: agreement is undefined.")
    else:
        kappa_contributions = _fleiss_contributions(table, int(raters[0]))
    alpha_contributions = _alpha_contributions(table)
    if n_items and alpha_contributions.shape[0] == 0:
        messages.append("No item has two or more votes: Krippendorff's α is undefined.")

    wanted = [c for c in (kappa_contributions, alpha_contributions) if c is not None and c.size]
    sums: Iterator[np.ndarray] = iter([])
    if wanted:
        sums = iter((yield wanted))
    kappa = kappa_ci = alpha = alpha_ci = None
    if kappa_contributions is not None:
        rater_count = int(raters[0])
        kappa, kappa_ci = _estimate_with_ci(
            kappa_contributions, next(sums), lambda totals: _fleiss_from_sums(totals, rater_count),
            confidence, "Fleiss' κ", messages,
        )
    if alpha_contributions.size:
        alpha, alpha_ci = _estimate_with_ci(
            alpha_contributions, next(sums), _alpha_from_sums, confidence, "Krippendorff's α",
            messages,
        )
    return AgreementSummary(
        n_items=n_items, n_votes=int(table.sum()), fleiss_kappa=kappa, kappa_ci=kappa_ci,
        krippendorff_alpha=alpha, alpha_ci=alpha_ci, confidence=confidence,
        message=" ".join(messages) or None,
    )


@dataclass(frozen=True)
class AnnotatorScore:
    """How often one annotator's votes matched a reference (majority or gold), with a Wilson CI."""

    n: int
    matches: int
    rate: float | None
    ci: Interval | None


def annotator_majority_agreement(
    judgments: Iterable[Judgment], confidence: float = 0.95
) -> dict[str, AnnotatorScore]:
    """Each annotator's agreement with the majority of the *other* votes on the same item.

    Leaving the annotator's own vote out avoids crediting them for agreeing with themselves
    (with 5 votes their own vote is a fifth of the majority). The reference is the label with
    more than half of the other votes; items where the others have no majority do not count.
    """
    by_item = _by_item(judgments)
    matches: dict[str, int] = defaultdict(int)
    counted: dict[str, int] = defaultdict(int)
    for votes in by_item.values():
        totals = Counter(votes.values())
        others_count = len(votes) - 1
        for annotator, label in votes.items():
            counted.setdefault(annotator, 0)
            matches.setdefault(annotator, 0)
            if others_count < 1:
                continue
            others = totals.copy()
            others[label] -= 1
            reference = next((lab for lab, c in others.items() if 2 * c > others_count), None)
            if reference is None:
                continue
            counted[annotator] += 1
            matches[annotator] += int(label == reference)
    return {a: _score(matches[a], counted[a], confidence) for a in sorted(counted)}


def gold_accuracy(
    judgments: Iterable[Judgment], gold: Mapping[str, str], confidence: float = 0.95
) -> dict[str, AnnotatorScore]:
    """Each annotator's accuracy on gold items (items with a known answer), with a Wilson CI.

    Judgments on items without a gold answer are ignored; an annotator who saw no gold item
    gets ``rate=None``.
    """
    matches: dict[str, int] = defaultdict(int)
    counted: dict[str, int] = defaultdict(int)
    for item, annotator, label in judgments:
        counted.setdefault(annotator, 0)
        matches.setdefault(annotator, 0)
        if item in gold:
            counted[annotator] += 1
            matches[annotator] += int(label == gold[item])
    return {a: _score(matches[a], counted[a], confidence) for a in sorted(counted)}


# --- vectorized pieces ---------------------------------------------------------------------


def _check_table(table: np.ndarray) -> np.ndarray:
    array = np.asarray(table)
    if array.ndim != 2:
        raise ValueError(f"the vote table must be items × categories (2-D), got shape {array.shape}")
    if array.size and (array < 0).any():
        raise ValueError("the vote table holds negative counts")
    return array.astype(np.float64)


def _constant_raters(table: np.ndarray) -> int:
    raters = np.unique(table.sum(axis=1))
    if raters.size != 1:
        raise ValueError(
            f"Fleiss' κ needs the same number of votes on every item; found {sorted(raters.tolist())}"
        )
    if raters[0] < 2:
        raise ValueError("Fleiss' κ needs at least 2 votes per item")
    return int(raters[0])


def _fleiss_contributions(table: np.ndarray, raters: int) -> np.ndarray:
    # Per item: agreeing ordered pairs Σ_j n_ij(n_ij − 1), then the category counts.
    agreeing = (table * (table - 1)).sum(axis=1, keepdims=True)
    return np.hstack([agreeing, table])


def _fleiss_from_sums(sums: np.ndarray, raters: int) -> np.ndarray:
    # The category totals add up to items × raters, which also serves leave-one-out sums.
    votes = sums[:, 1:].sum(axis=1, keepdims=True)
    observed = sums[:, 0] / (votes[:, 0] * (raters - 1))
    shares = sums[:, 1:] / votes
    expected = (shares**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (observed - expected) / (1 - expected)


def _alpha_contributions(table: np.ndarray) -> np.ndarray:
    values = table.sum(axis=1)
    pairable = table[values >= 2]
    m = values[values >= 2][:, None]
    # Per pairable item: Σ_c o_cc contribution, m_u, then n_uc (which sum to n_c over items).
    matching = (pairable * (pairable - 1)).sum(axis=1, keepdims=True) / (m - 1)
    return np.hstack([matching, m, pairable])


def _alpha_from_sums(sums: np.ndarray) -> np.ndarray:
    matching, n = sums[:, 0], sums[:, 1]
    category_totals = sums[:, 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - (n - 1) * (n - matching) / (n**2 - (category_totals**2).sum(axis=1))


def _estimate_with_ci(
    contributions: np.ndarray,
    resampled_sums: np.ndarray,
    from_sums: Callable[[np.ndarray], np.ndarray],
    confidence: float,
    name: str,
    messages: list[str],
) -> tuple[float | None, BootstrapInterval | None]:
    """Estimate and BCa interval of a coefficient that is a function of per-item sums."""
    totals = contributions.sum(axis=0)
    estimate = float(from_sums(totals[None, :])[0])
    if not np.isfinite(estimate):
        messages.append(f"{name} is undefined: every vote falls in one category.")
        return None, None
    # Every resample has the original number of items, so the formulas apply unchanged.
    distribution = from_sums(resampled_sums)
    # Leave-one-item-out values for the BCa acceleration.
    jackknife = from_sums(totals[None, :] - contributions) if contributions.shape[0] > 1 else None
    finite = np.isfinite(distribution)
    if not finite.all():
        messages.append(
            f"{name}: {int((~finite).sum())} bootstrap resamples without any variation were dropped."
        )
    if finite.sum() < 0.5 * distribution.size:
        messages.append(f"{name}: too few informative resamples for an interval.")
        return estimate, None
    if jackknife is not None and not np.isfinite(jackknife).all():
        jackknife = None
    interval = bootstrap_interval(estimate, distribution[finite], jackknife, confidence)
    return estimate, interval


def _by_item(judgments: Iterable[Judgment]) -> dict[str, dict[str, str]]:
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for index, (item, annotator, label) in enumerate(judgments):
        if annotator in by_item[item]:
            raise ValueError(
                f"judgment {index}: annotator {annotator!r} voted twice on item {item!r}"
            )
        by_item[item][annotator] = label
    return by_item


def _score(matches: int, n: int, confidence: float) -> AnnotatorScore:
    if n == 0:
        return AnnotatorScore(0, 0, None, None)
    return AnnotatorScore(n, matches, matches / n, wilson_interval(matches, n, confidence))
