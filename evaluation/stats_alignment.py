"""Text alignment statistics: yes/no questions per prompt (DSG, Cho et al. 2024, ICLR).

The input is each prompt's final answers, question -> yes, as ``annotation.voting`` decides
them (majority of K per question, then the DSG rule) and aggregation stores them; nothing here
votes. The answers are averaged within each prompt, and the prompt scores over prompts.
Public names are re-exported from ``evaluation.stats``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar

from evaluation.stats_core import (
    BootstrapInterval,
    PromptBootstrap,
    Steps,
    bootstrap_interval,
    minimal_detectable_difference,
    run_with_bootstrap,
)

__all__ = [
    "AlignmentComparison",
    "AlignmentSummary",
    "PromptOutcomes",
    "alignment_comparison_steps",
    "alignment_steps",
    "compare_alignment",
    "summarize_alignment",
]

# prompt -> question -> final answer (True = yes), as annotation.voting decides it.
PromptOutcomes = Mapping[str, Mapping[str, bool]]


@dataclass(frozen=True)
class AlignmentSummary:
    """Text alignment rate of one model: mean over prompts of the per-prompt share of "yes"."""

    rate: float | None
    ci: BootstrapInterval | None
    n_prompts: int
    n_questions: int
    prompts_without_questions: int
    confidence: float
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (nested intervals become ``{"low", "high", "method"}``)."""
        return asdict(self)


def summarize_alignment(
    outcomes: PromptOutcomes,
    confidence: float = 0.95,
    *,
    bootstrap: PromptBootstrap | None = None,
) -> AlignmentSummary:
    """Alignment rate of one model with a bootstrap CI over prompts (``bootstrap_interval``).

    Prompts without questions are left out and counted; with none left the rate is ``None``.
    """
    bootstrap = bootstrap if bootstrap is not None else PromptBootstrap()
    steps = alignment_steps(outcomes, confidence)
    return run_with_bootstrap([steps], bootstrap)[0]


def alignment_steps(outcomes: PromptOutcomes, confidence: float = 0.95) -> Steps[AlignmentSummary]:
    """``summarize_alignment`` as ``Steps``, so that a report can batch its bootstrap sums."""
    scores = np.array(
        [sum(o.values()) / len(o) for o in outcomes.values() if o], dtype=np.float64
    )
    without = sum(1 for o in outcomes.values() if not o)
    n_questions = sum(len(o) for o in outcomes.values())
    messages = _without_questions_note(without)
    if scores.size == 0:
        messages.append("No prompt has alignment questions: the alignment rate is undefined.")
        return AlignmentSummary(None, None, 0, 0, without, confidence, " ".join(messages))
    rate = float(scores.mean())
    (sums,) = yield [scores]
    ci = bootstrap_interval(rate, sums / scores.size, _jackknife_means(scores), confidence)
    return AlignmentSummary(
        rate, ci, int(scores.size), n_questions, without, confidence, " ".join(messages) or None
    )


@dataclass(frozen=True)
class AlignmentComparison:
    """Paired text alignment of model A against model B over the prompts both can be scored on.

    ``mcnemar_p`` is the exact McNemar test on per-question outcomes (``a_only`` questions
    answered yes for A only, ``b_only`` for B only). ``difference_ci`` is a paired bootstrap
    over prompts; ``within_margin_of_error`` is true when it contains 0.
    """

    rate_a: float | None
    rate_b: float | None
    rate_a_ci: BootstrapInterval | None
    rate_b_ci: BootstrapInterval | None
    difference: float | None
    difference_ci: BootstrapInterval | None
    within_margin_of_error: bool | None
    mcnemar_p: float | None
    a_only: int
    b_only: int
    n_prompts: int
    n_questions: int
    minimal_detectable_difference: float | None
    confidence: float
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (nested intervals become ``{"low", "high", "method"}``)."""
        return asdict(self)


def compare_alignment(
    model_a: PromptOutcomes,
    model_b: PromptOutcomes,
    confidence: float = 0.95,
    *,
    bootstrap: PromptBootstrap | None = None,
    power: float = 0.8,
) -> AlignmentComparison:
    """Paired comparison of two models' text alignment on the same prompts and questions.

    - Pairing: prompts with questions for both models; within a prompt, questions with the
      same id. Rates, difference and tests all use exactly these pairs.
    - Difference: mean over prompts of (score A − score B), with a paired bootstrap CI that
      resamples prompts (BCa, percentile where BCa degenerates).
    - Exact McNemar test (McNemar 1947) on the per-question 2×2 table, via
      ``statsmodels mcnemar(exact=True)``. Questions are the natural paired binary outcome;
      because questions of one prompt are correlated, this test can be anti-conservative, and
      the prompt-level bootstrap CI (which keeps a prompt's questions together) is what the
      "within the margin of error" flag uses.
    - Minimal detectable difference at the current number of prompts with ``power``
      (``minimal_detectable_difference`` of the per-prompt differences).
    """
    bootstrap = bootstrap if bootstrap is not None else PromptBootstrap()
    steps = alignment_comparison_steps(model_a, model_b, confidence, power=power)
    return run_with_bootstrap([steps], bootstrap)[0]


def alignment_comparison_steps(
    outcomes_a: PromptOutcomes,
    outcomes_b: PromptOutcomes,
    confidence: float = 0.95,
    *,
    power: float = 0.8,
) -> Steps[AlignmentComparison]:
    """``compare_alignment`` as ``Steps``."""
    paired_prompts = [
        prompt_id for prompt_id in outcomes_a
        if outcomes_a[prompt_id] and outcomes_b.get(prompt_id)
        and not outcomes_a[prompt_id].keys().isdisjoint(outcomes_b[prompt_id])
    ]
    unpaired = len(set(outcomes_a) | set(outcomes_b)) - len(paired_prompts)
    messages: list[str] = []
    if unpaired:
        messages.append(
            f"{unpaired} prompt{'s' if unpaired != 1 else ''} without alignment questions for both "
            "models left out."
        )
    scores_a: list[float] = []
    scores_b: list[float] = []
    cells = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for prompt_id in paired_prompts:
        answers_a, answers_b = outcomes_a[prompt_id], outcomes_b[prompt_id]
        shared = [q for q in answers_a if q in answers_b]
        for q in shared:
            cells[(answers_a[q], answers_b[q])] += 1
        scores_a.append(sum(answers_a[q] for q in shared) / len(shared))
        scores_b.append(sum(answers_b[q] for q in shared) / len(shared))
    # Per-question 2×2 table: rows A yes / A no, columns B yes / B no.
    table = np.array([
        [cells[(True, True)], cells[(True, False)]],
        [cells[(False, True)], cells[(False, False)]],
    ])
    n = len(paired_prompts)
    a_only, b_only = int(table[0, 1]), int(table[1, 0])
    if n == 0:
        messages.append(
            "No prompt has alignment questions for both models: text alignment cannot be compared."
        )
        return AlignmentComparison(
            None, None, None, None, None, None, None, None, 0, 0, 0, 0, None, confidence,
            " ".join(messages),
        )
    per_prompt = np.column_stack([scores_a, scores_b])
    differences = per_prompt[:, 0] - per_prompt[:, 1]
    columns = np.column_stack([per_prompt, differences])
    (sums,) = yield [columns]
    distributions = sums / n
    estimates = columns.mean(axis=0)
    intervals = [
        bootstrap_interval(
            float(estimates[k]), distributions[:, k], _jackknife_means(columns[:, k]), confidence
        )
        for k in range(3)
    ]
    difference_ci = intervals[2]
    mcnemar_p: float | None = None
    if a_only + b_only == 0:
        messages.append(
            "No question was answered differently for the two models: McNemar's test is undefined."
        )
    else:
        mcnemar_p = float(mcnemar(table, exact=True).pvalue)
    if n < 5:
        messages.append(
            f"Only {n} paired prompt{'s' if n != 1 else ''}: the interval is very wide; do not "
            "draw conclusions."
        )
    detectable = minimal_detectable_difference(differences, alpha=1 - confidence, power=power)
    within = difference_ci.contains(0.0)
    if within:
        messages.append("The difference is within the margin of error (its CI contains 0).")
    return AlignmentComparison(
        rate_a=float(estimates[0]), rate_b=float(estimates[1]),
        rate_a_ci=intervals[0], rate_b_ci=intervals[1],
        difference=float(estimates[2]), difference_ci=difference_ci,
        within_margin_of_error=within, mcnemar_p=mcnemar_p,
        a_only=a_only, b_only=b_only, n_prompts=n, n_questions=int(table.sum()),
        minimal_detectable_difference=detectable, confidence=confidence,
        message=" ".join(messages) or None,
    )


def _jackknife_means(values: np.ndarray) -> np.ndarray | None:
    """Leave-one-out means, the jackknife values of the mean."""
    if values.size < 2:
        return None
    return (values.sum() - values) / (values.size - 1)


def _without_questions_note(count: int) -> list[str]:
    if not count:
        return []
    return [f"{count} prompt{'s' if count != 1 else ''} without alignment questions left out."]
