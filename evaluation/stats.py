"""Statistics of an evaluation round: pure numpy/scipy/statsmodels functions, no Django.

The unit of analysis is the prompt. Each prompt's label ("A", "tie", "B") is its item's
stored majority, decided by ``annotation.voting``: nothing here votes. Every rate, interval
and test below counts prompts, and every bootstrap resamples prompts, so a prompt's votes
always travel together.

Pairwise results (``summarize_pairwise``): counts and rates of "A" wins, ties and "B" wins,
Wilson and simultaneous Goodman intervals, the net win rate (W − L)/N with a bootstrap CI,
the exact sign test, and the number of prompts a non-significant result would need.
Across the rows of a report, ``adjust_p_values`` applies Holm (or Benjamini–Hochberg).

Text alignment, agreement and the Bradley–Terry leaderboard live in sibling modules and are
re-exported here, so ``from evaluation.stats import ...`` is the one import a caller needs.

No output holds NaN: a number that is undefined is ``None`` and ``message`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import multinomial_proportions_confint

from annotation.criteria import Criterion
from evaluation.stats_agreement import (
    AgreementSummary,
    AnnotatorScore,
    agreement_steps,
    annotator_majority_agreement,
    fleiss_kappa,
    gold_accuracy,
    krippendorff_alpha_nominal,
    summarize_agreement,
    vote_table,
)
from evaluation.stats_alignment import (
    AlignmentComparison,
    AlignmentSummary,
    PromptOutcomes,
    alignment_comparison_steps,
    alignment_steps,
    compare_alignment,
    summarize_alignment,
)
from evaluation.stats_core import (
    BootstrapInterval,
    Interval,
    PromptBootstrap,
    Steps,
    bootstrap_interval,
    minimal_detectable_difference,
    run_with_bootstrap,
    wilson_interval,
)
from evaluation.stats_ranking import (
    BradleyTerryEntry,
    PairCounts,
    bradley_terry,
    bradley_terry_strengths,
)

__all__ = [
    "AgreementSummary",
    "AlignmentComparison",
    "AlignmentSummary",
    "AnnotatorScore",
    "BootstrapInterval",
    "BradleyTerryEntry",
    "CategoryIntervals",
    "CRITERIA",
    "ComparisonRow",
    "Interval",
    "LABELS",
    "PairCounts",
    "PairwiseSummary",
    "PositionBias",
    "PromptOutcomes",
    "PromptBootstrap",
    "Steps",
    "adjust_p_values",
    "agreement_steps",
    "alignment_comparison_steps",
    "alignment_steps",
    "annotator_majority_agreement",
    "bootstrap_interval",
    "bradley_terry",
    "bradley_terry_strengths",
    "compare_alignment",
    "fleiss_kappa",
    "gold_accuracy",
    "krippendorff_alpha_nominal",
    "minimal_detectable_difference",
    "pairwise_steps",
    "paper_table_rows",
    "table_tests",
    "position_bias_test",
    "prompts_needed",
    "run_with_bootstrap",
    "summarize_agreement",
    "summarize_alignment",
    "summarize_pairwise",
    "vote_table",
    "wilson_interval",
]

LABELS: tuple[str, str, str] = ("A", "tie", "B")
_SCORE = {"A": 1, "tie": 0, "B": -1}
SMALL_N = 5

# --- pairwise summary ----------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryIntervals:
    """One interval per outcome: A wins, ties, B wins."""

    win: Interval
    tie: Interval
    loss: Interval


@dataclass(frozen=True)
class PairwiseSummary:
    """Win/tie/loss statistics of one comparison on one criterion (see ``summarize_pairwise``).

    ``wins`` counts prompts won by model A, ``losses`` prompts won by model B. Fields that are
    undefined for the data (for example every rate when n = 0, the sign test without decisive
    prompts) are ``None``; ``message`` explains each of them in words.
    """

    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float | None
    tie_rate: float | None
    loss_rate: float | None
    wilson: CategoryIntervals | None
    goodman: CategoryIntervals | None
    net_win_rate: float | None
    net_win_ci: BootstrapInterval | None
    sign_test_p: float | None
    prompts_needed: int | None
    no_majority: int | None
    confidence: float
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (nested intervals become ``{"low", "high"[, "method"]}``)."""
        return asdict(self)


def summarize_pairwise(
    labels: Sequence[str],
    confidence: float = 0.95,
    *,
    bootstrap: PromptBootstrap | None = None,
    no_majority: int | None = None,
    power: float = 0.8,
) -> PairwiseSummary:
    """Summarize per-prompt outcomes in {"A", "tie", "B"} of one pairwise comparison.

    - Rates: wins/n, ties/n, losses/n.
    - Wilson score interval for each rate (Wilson 1927), each at ``confidence``.
    - Goodman (1965) simultaneous intervals for the three rates together, via
      ``statsmodels multinomial_proportions_confint(method='goodman')``. Goodman's chi-square
      approximation wants every count ≥ 5; ``message`` notes when that fails.
    - Net win rate (W − L)/n, the mean of per-prompt scores A = +1, tie = 0, B = −1, with a
      bootstrap CI over prompts (BCa, percentile where BCa degenerates; ``bootstrap_interval``).
    - Exact two-sided sign test of wins against losses, ties dropped (Dixon & Mood 1946):
      ``scipy.stats.binomtest(wins, wins + losses, 0.5)``.
    - When that test is not significant at 1 − ``confidence`` and the net win rate is not 0:
      the prompts needed to detect the observed net win rate at ``power`` (``prompts_needed``).

    ``no_majority`` (prompts decided by the round's no-majority rule) is carried through for the report.
    """
    bootstrap = bootstrap if bootstrap is not None else PromptBootstrap()
    steps = pairwise_steps(labels, confidence, no_majority=no_majority, power=power)
    return run_with_bootstrap([steps], bootstrap)[0]


def pairwise_steps(
    labels: Sequence[str],
    confidence: float = 0.95,
    *,
    no_majority: int | None = None,
    power: float = 0.8,
) -> Steps[PairwiseSummary]:
    """``summarize_pairwise`` as ``Steps``, so that a report can batch its bootstrap sums."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    _check_labels(labels, where="labels")
    scores = np.fromiter((_SCORE[label] for label in labels), dtype=np.float64, count=len(labels))
    n = int(scores.size)
    wins = int(np.count_nonzero(scores > 0))
    losses = int(np.count_nonzero(scores < 0))
    ties = n - wins - losses
    messages: list[str] = []

    if n == 0:
        messages.append("No prompts have a result yet; every rate, interval and test is undefined.")
        return PairwiseSummary(
            n=0, wins=0, ties=0, losses=0, win_rate=None, tie_rate=None, loss_rate=None,
            wilson=None, goodman=None, net_win_rate=None, net_win_ci=None, sign_test_p=None,
            prompts_needed=None, no_majority=no_majority, confidence=confidence,
            message=" ".join(messages),
        )

    counts = (wins, ties, losses)
    intervals = [wilson_interval(count, n, confidence) for count in counts]
    wilson = CategoryIntervals(*(interval for interval in intervals if interval is not None))
    goodman_bounds = multinomial_proportions_confint(counts, alpha=1 - confidence, method="goodman")
    goodman = CategoryIntervals(
        *(Interval(float(max(0.0, low)), float(min(1.0, high))) for low, high in goodman_bounds)
    )
    if n < SMALL_N:
        messages.append(
            f"Only {n} prompt{'s' if n != 1 else ''} (fewer than {SMALL_N}): the intervals are very "
            "wide and the tests have almost no power; do not draw conclusions."
        )
    if min(counts) < 5:
        messages.append(
            "At least one of wins, ties and losses is below 5, where Goodman's chi-square "
            "approximation is unreliable; prefer the Wilson intervals."
        )

    net_win_rate = (wins - losses) / n
    (score_sums,) = yield [scores]
    distribution = score_sums / n
    # Leave-one-prompt-out values of the mean, for the BCa acceleration.
    jackknife = (scores.sum() - scores) / (n - 1) if n > 1 else None
    net_win_ci = bootstrap_interval(net_win_rate, distribution, jackknife, confidence)
    if net_win_ci.low == net_win_ci.high:
        messages.append(
            "Every bootstrap resample gives the same net win rate, so its interval has zero width; "
            "it reflects too little data, not certainty."
        )

    decisive = wins + losses
    sign_test_p: float | None = None
    if decisive == 0:
        what = "all prompts are ties" if n > 0 else "there are no prompts"
        messages.append(
            f"No decisive prompts ({what}): the sign test of wins against losses is undefined."
        )
    else:
        sign_test_p = float(binomtest(wins, decisive, 0.5, alternative="two-sided").pvalue)

    needed: int | None = None
    if sign_test_p is not None and sign_test_p >= 1 - confidence:
        if wins == losses:
            messages.append(
                "Wins equal losses: no number of prompts would detect a difference of zero."
            )
        else:
            needed = prompts_needed(
                net_win_rate, tie_rate=ties / n, alpha=1 - confidence, power=power
            )
            messages.append(
                f"Not significant at α = {1 - confidence:.2g}: detecting the observed net win rate "
                f"of {net_win_rate:+.3f} with {power:.0%} power needs about {needed} prompts."
            )

    return PairwiseSummary(
        n=n, wins=wins, ties=ties, losses=losses,
        win_rate=wins / n, tie_rate=ties / n, loss_rate=losses / n,
        wilson=wilson, goodman=goodman,
        net_win_rate=net_win_rate, net_win_ci=net_win_ci,
        sign_test_p=sign_test_p, prompts_needed=needed, no_majority=no_majority,
        confidence=confidence, message=" ".join(messages) or None,
    )


# --- multiple testing, position bias, power ------------------------------------------------


def adjust_p_values(
    p_values: Sequence[float | None], method: Literal["holm", "fdr_bh"] = "holm"
) -> list[float | None]:
    """Adjust the p-values of a report's rows for multiple testing.

    ``"holm"``: Holm (1979) step-down, controls the family-wise error rate. With the m
    p-values sorted, p̃₍ᵢ₎ = maxⱼ≤ᵢ min(1, (m − j + 1)·p₍ⱼ₎).
    ``"fdr_bh"``: Benjamini & Hochberg (1995) step-up, controls the false discovery rate:
    p̃₍ᵢ₎ = minⱼ≥ᵢ min(1, m·p₍ⱼ₎/j).
    The numbers equal ``statsmodels.stats.multitest.multipletests`` (a test checks it); that
    function is not called because its Holm branch runs ``gc.collect()`` on every call, which
    costs 0.05–0.2 s in a process holding a report. ``None`` entries (undefined tests) stay
    ``None`` and are not part of the family.
    """
    if method not in ("holm", "fdr_bh"):
        raise ValueError(f"method must be 'holm' or 'fdr_bh', got {method!r}")
    present = [index for index, p in enumerate(p_values) if p is not None]
    for index in present:
        p = p_values[index]
        assert p is not None
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"p-value at position {index} must lie in [0, 1], got {p}")
    adjusted: list[float | None] = [None] * len(p_values)
    if not present:
        return adjusted
    raw = np.array([p_values[index] for index in present], dtype=np.float64)
    m = raw.size
    order = np.argsort(raw, kind="stable")
    ranked = raw[order]
    if method == "holm":
        corrected_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        scaled = ranked * m / np.arange(1, m + 1)
        corrected_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    corrected = np.empty(m)
    corrected[order] = corrected_sorted
    for index, value in zip(present, corrected):
        adjusted[index] = float(value)
    return adjusted


@dataclass(frozen=True)
class PositionBias:
    """Exact binomial test of whether the left image wins as often as the right one."""

    left_wins: int
    right_wins: int
    left_share: float | None
    p_value: float | None
    message: str | None


def position_bias_test(left_wins: int, right_wins: int) -> PositionBias:
    """Two-sided exact binomial test of left against right wins, ties dropped (``binomtest``).

    Counts are per vote by screen position, whatever model was shown there. A small p-value
    means annotators favour a side; randomised placement keeps the model comparison fair, but
    the bias still adds noise worth knowing.
    """
    if left_wins < 0 or right_wins < 0:
        raise ValueError(f"counts must be non-negative, got left={left_wins}, right={right_wins}")
    decisive = left_wins + right_wins
    if decisive == 0:
        return PositionBias(left_wins, right_wins, None, None,
                            "No decisive votes: position bias cannot be tested.")
    p_value = float(binomtest(left_wins, decisive, 0.5, alternative="two-sided").pvalue)
    return PositionBias(left_wins, right_wins, left_wins / decisive, p_value, None)


def prompts_needed(
    net_win_rate: float, *, tie_rate: float = 0.0, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Prompts needed for the two-sided sign test to detect ``net_win_rate`` = (W − L)/N.

    Normal approximation to the sign test (Noether 1987, JASA 82:645): with decisive share
    ``d = 1 − tie_rate`` and ``p = (1 + net_win_rate/d)/2`` the win share among decisive prompts,
    the decisive prompts needed are ``m = ((z₁₋α/₂·½ + z_power·√(p(1−p))) / (p − ½))²`` and the
    prompts needed are ``⌈m / d⌉``.
    """
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    if not 0.0 <= tie_rate < 1.0:
        raise ValueError(f"tie_rate must lie in [0, 1), got {tie_rate}")
    decisive_share = 1.0 - tie_rate
    # Rates come from counts: every decisive prompt one way gives |net| = 1 − tie_rate up to rounding (0.1 vs
    # 1 − 0.9 = 0.09999999999999998), which is the largest effect there is, not a wrong input.
    if net_win_rate == 0.0 or abs(net_win_rate) > decisive_share + 1e-9:
        raise ValueError(
            f"net_win_rate must be non-zero and at most 1 − tie_rate = {decisive_share:.3f} in size, "
            f"got {net_win_rate}"
        )
    p = 0.5 * (1.0 + min(1.0, abs(net_win_rate) / decisive_share))
    z_alpha = float(norm.ppf(1 - alpha / 2))
    z_power = float(norm.ppf(power))
    decisive = ((0.5 * z_alpha + z_power * math.sqrt(p * (1 - p))) / (p - 0.5)) ** 2
    return max(1, math.ceil(decisive / decisive_share - 1e-9))


# --- the seed paper's table layout ---------------------------------------------------------


@dataclass(frozen=True)
class ComparisonRow:
    """One row of a report: model A against model B on both criteria and text alignment."""

    model_a: str
    model_b: str
    visual_flaws: PairwiseSummary | None
    visual_appeal: PairwiseSummary | None
    text_alignment: AlignmentComparison | None
    visual_flaws_agreement: AgreementSummary | None = None
    visual_appeal_agreement: AgreementSummary | None = None


def paper_table_rows(
    rows: Sequence[ComparisonRow], *, p_adjust: Literal["holm", "fdr_bh"] = "holm"
) -> list[dict[str, Any]]:
    """Turn comparison rows into the seed paper's table layout as plain, JSON-ready dicts.

    Columns: Model A | Model B | Visual Flaws: A wins / Tie / B wins | Visual Appeal: A wins /
    Tie / B wins | Text alignment: A / B. A cell is ``{"count", "rate", "ci_low", "ci_high"}``
    with the rate as a fraction in [0, 1]: Wilson intervals for the pairwise outcomes, bootstrap
    intervals for alignment rates and differences. Agreement, where the row has it, sits under
    each criterion. Each criterion carries its raw p-value (sign test; McNemar for alignment)
    and the p-value adjusted over the family of the tests in the table that ran (all rows, all
    criteria the evaluation has rounds for; ``table_tests`` counts them) with ``adjust_p_values``.
    Missing or undefined numbers are ``None``, never NaN.
    """
    adjusted = adjust_p_values(_table_p_values(rows), method=p_adjust)
    table: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        table.append({
            "model_a": row.model_a,
            "model_b": row.model_b,
            "visual_flaws": _pairwise_cells(
                row.visual_flaws, adjusted[3 * index], row.visual_flaws_agreement
            ),
            "visual_appeal": _pairwise_cells(
                row.visual_appeal, adjusted[3 * index + 1], row.visual_appeal_agreement
            ),
            "text_alignment": _alignment_cells(row.text_alignment, adjusted[3 * index + 2]),
            "p_adjust": p_adjust,
        })
    return table


def _table_p_values(rows: Sequence[ComparisonRow]) -> list[float | None]:
    """The table's raw p-values, three per row; ``None`` where no test ran (no round, or nothing decided)."""
    raw: list[float | None] = []
    for row in rows:
        raw.append(row.visual_flaws.sign_test_p if row.visual_flaws else None)
        raw.append(row.visual_appeal.sign_test_p if row.visual_appeal else None)
        raw.append(row.text_alignment.mcnemar_p if row.text_alignment else None)
    return raw


def table_tests(rows: Sequence[ComparisonRow]) -> int:
    """How many tests ``paper_table_rows`` adjusts over: those that ran; a criterion without a round adds none."""
    return sum(p is not None for p in _table_p_values(rows))


def _rate_cell(rate: float | None, interval: Interval | None, count: int | None) -> dict[str, Any]:
    return {
        "count": count,
        "rate": rate,
        "ci_low": interval.low if interval else None,
        "ci_high": interval.high if interval else None,
    }


def _pairwise_cells(
    summary: PairwiseSummary | None,
    p_adjusted: float | None,
    agreement: AgreementSummary | None,
) -> dict[str, Any] | None:
    if summary is None:
        return None
    wilson = summary.wilson
    return {
        "n": summary.n,
        "a_wins": _rate_cell(summary.win_rate, wilson.win if wilson else None, summary.wins),
        "tie": _rate_cell(summary.tie_rate, wilson.tie if wilson else None, summary.ties),
        "b_wins": _rate_cell(summary.loss_rate, wilson.loss if wilson else None, summary.losses),
        "net_win_rate": _rate_cell(summary.net_win_rate, summary.net_win_ci, None),
        "net_win_ci_method": summary.net_win_ci.method if summary.net_win_ci else None,
        "p_value": summary.sign_test_p,
        "p_adjusted": p_adjusted,
        "prompts_needed": summary.prompts_needed,
        "no_majority": summary.no_majority,
        "message": summary.message,
        "agreement": None if agreement is None else {
            "fleiss_kappa": _rate_cell(agreement.fleiss_kappa, agreement.kappa_ci, None),
            "krippendorff_alpha": _rate_cell(agreement.krippendorff_alpha, agreement.alpha_ci, None),
            "n_votes": agreement.n_votes,
            "message": agreement.message,
        },
    }


def _alignment_cells(
    comparison: AlignmentComparison | None, p_adjusted: float | None
) -> dict[str, Any] | None:
    if comparison is None:
        return None
    return {
        "n_prompts": comparison.n_prompts,
        "a": _rate_cell(comparison.rate_a, comparison.rate_a_ci, None),
        "b": _rate_cell(comparison.rate_b, comparison.rate_b_ci, None),
        "difference": _rate_cell(comparison.difference, comparison.difference_ci, None),
        "p_value": comparison.mcnemar_p,
        "p_adjusted": p_adjusted,
        "within_margin_of_error": comparison.within_margin_of_error,
        "minimal_detectable_difference": comparison.minimal_detectable_difference,
        "message": comparison.message,
    }


CRITERIA: tuple[str, ...] = tuple(c.value for c in Criterion)


# --- helpers -------------------------------------------------------------------------------


def _check_labels(labels: Iterable[str], *, where: str) -> None:
    for index, label in enumerate(labels):
        if label not in _SCORE:
            raise ValueError(f"{where}[{index}]: {label!r} is not one of 'A', 'tie', 'B'")
