"""Tests of evaluation.stats against independent scipy/statsmodels calls and hand calculations."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa
from statsmodels.stats.proportion import multinomial_proportions_confint, proportion_confint

from evaluation.stats import (
    AlignmentQuestion,
    ComparisonRow,
    PairCounts,
    PromptBootstrap,
    adjust_p_values,
    annotator_majority_agreement,
    apply_dsg_dependencies,
    bootstrap_interval,
    bradley_terry,
    bradley_terry_strengths,
    compare_alignment,
    fleiss_kappa,
    gold_accuracy,
    krippendorff_alpha_nominal,
    minimal_detectable_difference,
    paper_table_rows,
    position_bias_test,
    prompt_alignment_scores,
    prompts_needed,
    question_majority,
    reduce_votes,
    summarize_agreement,
    summarize_alignment,
    summarize_pairwise,
    summarize_pairwise_votes,
    vote_table,
    wilson_interval,
)

N_PAPER = 600
SCORES = {"A": 1.0, "tie": 0.0, "B": -1.0}


def labels_from_counts(wins: int, ties: int, losses: int) -> list[str]:
    return ["A"] * wins + ["tie"] * ties + ["B"] * losses


def assert_no_nan(value: Any, path: str = "summary") -> None:
    """Walk a nested dict/list and fail on any NaN or infinite float."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_no_nan(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            assert_no_nan(item, f"{path}[{index}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{path} is {value}"


def as_dict(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj)


# --- the seed paper's Table 1 at n = 600 ---------------------------------------------------

# (A wins %, tie %, B wins %) as printed, and the counts out of 600 prompts they come from.
PAPER_ROWS = [
    ((64.2, 26.5, 9.3), (385, 159, 56)),
    ((46.8, 38.5, 14.7), (281, 231, 88)),
    ((33.3, 47.2, 19.5), (200, 283, 117)),
    ((21.0, 55.3, 23.7), (126, 332, 142)),
]


@pytest.mark.parametrize(("percentages", "counts"), PAPER_ROWS)
def test_table_rows_reproduce_printed_percentages_from_counts(percentages, counts):
    assert [round(p * N_PAPER / 100) for p in percentages] == list(counts)
    summary = summarize_pairwise(labels_from_counts(*counts), bootstrap=PromptBootstrap(500))
    assert (summary.n, summary.wins, summary.ties, summary.losses) == (N_PAPER, *counts)
    rates = (summary.win_rate, summary.tie_rate, summary.loss_rate)
    assert [round(100 * rate, 1) for rate in rates] == list(percentages)


@pytest.mark.parametrize(("percentages", "counts"), PAPER_ROWS)
def test_intervals_and_sign_test_match_independent_calls(percentages, counts):
    summary = summarize_pairwise(labels_from_counts(*counts), bootstrap=PromptBootstrap(500))
    wilson = (summary.wilson.win, summary.wilson.tie, summary.wilson.loss)
    goodman = (summary.goodman.win, summary.goodman.tie, summary.goodman.loss)
    expected_goodman = multinomial_proportions_confint(counts, alpha=0.05, method="goodman")
    for count, interval, simultaneous, bounds in zip(counts, wilson, goodman, expected_goodman):
        low, high = proportion_confint(count, N_PAPER, alpha=0.05, method="wilson")
        assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)
        assert (simultaneous.low, simultaneous.high) == pytest.approx(tuple(bounds), abs=1e-12)
        # Simultaneous intervals are wider than the per-category ones.
        assert simultaneous.low < interval.low and simultaneous.high > interval.high
    wins, _, losses = counts
    expected_p = stats.binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue
    assert summary.sign_test_p == pytest.approx(expected_p, rel=1e-12)
    assert summary.net_win_rate == pytest.approx((wins - losses) / N_PAPER)


def test_wilson_matches_the_formula_by_hand():
    # 385 of 600, z = 1.959964: centre (p + z²/2n)/(1 + z²/n), half-width z·sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n)
    p, n, z = 385 / 600, 600, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    interval = wilson_interval(385, 600)
    assert (interval.low, interval.high) == pytest.approx((centre - half, centre + half), abs=1e-14)
    assert (interval.low, interval.high) == pytest.approx((0.6025, 0.6790), abs=5e-5)


def test_sign_test_by_hand():
    # 5 wins, 0 losses: two-sided p = 2 · 0.5⁵ = 0.0625; ties do not enter the test.
    summary = summarize_pairwise(labels_from_counts(5, 3, 0), bootstrap=PromptBootstrap(200))
    assert summary.sign_test_p == pytest.approx(0.0625)


def test_confidence_level_changes_the_wilson_interval():
    labels = labels_from_counts(385, 159, 56)
    narrow = summarize_pairwise(labels, 0.90, bootstrap=PromptBootstrap(300))
    low, high = proportion_confint(385, 600, alpha=0.10, method="wilson")
    assert (narrow.wilson.win.low, narrow.wilson.win.high) == pytest.approx((low, high), abs=1e-12)


# --- the net win bootstrap against scipy.stats.bootstrap -----------------------------------


@pytest.mark.parametrize("counts", [(385, 159, 56), (20, 30, 14), (3, 1, 2)])
def test_net_win_bca_interval_equals_scipy_bootstrap_with_the_same_seed(counts):
    scores = np.array([SCORES[label] for label in labels_from_counts(*counts)])
    summary = summarize_pairwise(
        labels_from_counts(*counts), bootstrap=PromptBootstrap(n_resamples=4000, seed=7)
    )
    expected = stats.bootstrap(
        (scores,), np.mean, n_resamples=4000, method="BCa", rng=np.random.default_rng(7)
    ).confidence_interval
    assert summary.net_win_ci.method == "BCa"
    assert (summary.net_win_ci.low, summary.net_win_ci.high) == pytest.approx(
        (expected.low, expected.high), abs=1e-12
    )


def test_percentile_interval_equals_scipy_bootstrap_with_the_same_seed():
    rng = np.random.default_rng(3)
    values = rng.normal(size=150)
    resampler = PromptBootstrap(n_resamples=3000, seed=11)
    ours = bootstrap_interval(values.mean(), resampler.means(values), None, 0.9)
    expected = stats.bootstrap(
        (values,), np.mean, n_resamples=3000, method="percentile", confidence_level=0.9,
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert ours.method == "percentile"
    assert (ours.low, ours.high) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_bca_falls_back_to_percentile_where_scipy_returns_nan():
    scores = np.zeros(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scipy_ci = stats.bootstrap(
            (scores,), np.mean, n_resamples=500, method="BCa", rng=np.random.default_rng(0)
        ).confidence_interval
    assert math.isnan(scipy_ci.low)
    summary = summarize_pairwise(["tie"] * 30, bootstrap=PromptBootstrap(500))
    assert summary.net_win_ci.method == "percentile"
    assert (summary.net_win_ci.low, summary.net_win_ci.high) == (0.0, 0.0)


def test_resample_counts_keep_the_number_of_prompts():
    counts = PromptBootstrap(n_resamples=50, seed=1).counts(40)
    assert counts.shape == (50, 40)
    assert np.all(counts.sum(axis=1) == 40)


# --- majority reduction --------------------------------------------------------------------


def test_reduce_votes_majority_and_no_majority_rules():
    votes = [
        ["A", "A", "A", "B", "tie"],   # majority A
        ["B", "B", "B", "B", "A"],     # majority B
        ["A", "A", "tie", "tie", "B"],  # no majority, mean +0.2
        ["A", "A", "B", "B", "tie"],   # no majority, mean 0
        ["B", "B", "tie", "tie", "A"],  # no majority, mean −0.2
    ]
    as_tie = reduce_votes(votes)
    assert as_tie.labels == ("A", "B", "tie", "tie", "tie")
    assert as_tie.no_majority == 3
    by_mean = reduce_votes(votes, no_majority_rule="mean_score")
    assert by_mean.labels == ("A", "B", "A", "tie", "B")
    assert by_mean.no_majority == 3


def test_majority_needs_more_than_half_of_the_votes():
    # 2 of 4 is not a majority, 3 of 4 is.
    assert reduce_votes([["A", "A", "B", "tie"], ["A", "A", "A", "B"]]).labels == ("tie", "A")


def test_reduce_votes_rejects_unknown_labels_with_the_prompt_index():
    with pytest.raises(ValueError, match=r"prompt 1\[2\]: 'left' is not one of"):
        reduce_votes([["A", "A", "A"], ["A", "B", "left"]])


def test_summarize_pairwise_votes_counts_no_majority_prompts():
    votes = [["A"] * 5] * 8 + [["A", "A", "B", "B", "tie"]] * 2 + [["B"] * 3 + ["A"] * 2] * 3
    summary = summarize_pairwise_votes(votes, bootstrap=PromptBootstrap(300))
    assert (summary.wins, summary.ties, summary.losses) == (8, 2, 3)
    assert summary.no_majority == 2
    assert "2 prompts had no majority" in summary.message


def test_resampling_votes_keeps_a_prompts_votes_together():
    # Resampling prompts of vote lists gives the interval of resampling their majority labels.
    votes = [["A"] * 4 + ["B"]] * 30 + [["B"] * 3 + ["tie"] * 2] * 10 + [["tie"] * 5] * 20
    from_votes = summarize_pairwise_votes(votes, bootstrap=PromptBootstrap(1000, seed=5))
    from_labels = summarize_pairwise(
        reduce_votes(votes).labels, bootstrap=PromptBootstrap(1000, seed=5)
    )
    assert from_votes.net_win_ci == from_labels.net_win_ci


# --- edge cases: a message, never a NaN ----------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected_message"),
    [
        (["tie"] * 12, "No decisive prompts"),
        (["tie"] * 600, "No decisive prompts"),
        (["A", "B", "tie"], "Only 3 prompts"),
        (["A"], "Only 1 prompt "),
        ([], "No prompts"),
    ],
)
def test_edge_cases_give_a_message_and_no_nan(labels, expected_message):
    summary = summarize_pairwise(labels, bootstrap=PromptBootstrap(300))
    assert expected_message in summary.message
    assert_no_nan(summary.to_dict())
    json.dumps(summary.to_dict(), allow_nan=False)


def test_all_ties_has_no_sign_test_and_a_zero_net_win_rate():
    summary = summarize_pairwise(["tie"] * 40, bootstrap=PromptBootstrap(300))
    assert summary.sign_test_p is None
    assert summary.net_win_rate == 0.0
    assert summary.tie_rate == 1.0
    assert summary.prompts_needed is None


def test_empty_input_leaves_every_number_undefined():
    summary = summarize_pairwise([])
    assert summary.win_rate is None and summary.wilson is None and summary.net_win_ci is None


def test_not_significant_result_reports_the_prompts_needed():
    summary = summarize_pairwise(labels_from_counts(22, 40, 18), bootstrap=PromptBootstrap(300))
    assert summary.sign_test_p > 0.05
    assert summary.prompts_needed == prompts_needed(4 / 80, tie_rate=40 / 80)
    assert f"about {summary.prompts_needed} prompts" in summary.message


def test_significant_result_needs_no_more_prompts():
    summary = summarize_pairwise(labels_from_counts(385, 159, 56), bootstrap=PromptBootstrap(300))
    assert summary.prompts_needed is None
    assert summary.message is None


# --- property-based ------------------------------------------------------------------------

count = st.integers(min_value=0, max_value=400)


@settings(max_examples=60, deadline=None)
@given(count, count, count)
def test_intervals_contain_the_rates_and_rates_sum_to_one(wins, ties, losses):
    if wins + ties + losses == 0:
        return
    summary = summarize_pairwise(
        labels_from_counts(wins, ties, losses), bootstrap=PromptBootstrap(50)
    )
    rates = (summary.win_rate, summary.tie_rate, summary.loss_rate)
    assert sum(rates) == pytest.approx(1.0)
    for intervals in (summary.wilson, summary.goodman):
        for rate, interval in zip(rates, (intervals.win, intervals.tie, intervals.loss)):
            assert 0.0 <= interval.low <= rate + 1e-12
            assert rate - 1e-12 <= interval.high <= 1.0
    assert -1.0 <= summary.net_win_ci.low <= summary.net_win_ci.high <= 1.0
    assert_no_nan(summary.to_dict())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30))
def test_holm_is_at_least_the_raw_p_and_keeps_their_order(p_values):
    for method in ("holm", "fdr_bh"):
        adjusted = adjust_p_values(p_values, method=method)
        for raw, adj in zip(p_values, adjusted):
            assert raw - 1e-15 <= adj <= 1.0
        order = np.argsort(p_values, kind="stable")
        sorted_adjusted = [adjusted[i] for i in order]
        assert all(a <= b + 1e-15 for a, b in zip(sorted_adjusted, sorted_adjusted[1:]))


def test_holm_by_hand_and_undefined_tests_stay_out_of_the_family():
    # Holm on (0.01, 0.04, 0.03): sorted 0.01·3, max(0.03·2, 0.03), max(0.04·1, 0.06).
    assert adjust_p_values([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])


# --- position bias and power ---------------------------------------------------------------


def test_position_bias_matches_binomtest():
    result = position_bias_test(70, 40)
    assert result.p_value == pytest.approx(stats.binomtest(70, 110, 0.5).pvalue)
    assert result.left_share == pytest.approx(70 / 110)
    assert position_bias_test(0, 0).p_value is None


def test_prompts_needed_by_hand():
    # No ties, net win rate 0.2 → p = 0.6: ((1.95996·0.5 + 0.84162·√0.24)/0.1)² = 193.85 → 194.
    assert prompts_needed(0.2) == 194
    # Half the prompts tied, net 0.1: the same 193.85 decisive prompts, so ⌈387.7⌉ prompts.
    assert prompts_needed(0.1, tie_rate=0.5) == 388


@pytest.mark.parametrize(("net_win_rate", "tie_rate"), [(0.2, 0.0), (0.1, 0.3), (-0.15, 0.5)])
def test_prompts_needed_gives_about_80_percent_exact_power(net_win_rate, tie_rate):
    n = prompts_needed(net_win_rate, tie_rate=tie_rate)

    def exact_power(prompts: int) -> float:
        decisive_share = 1 - tie_rate
        p_win = 0.5 * (1 + abs(net_win_rate) / decisive_share)
        total = 0.0
        for m in range(1, prompts + 1):
            k = np.arange(m + 1)
            # Two-sided exact sign test at p = 0.5 rejects where 2·min(cdf, sf) ≤ 0.05.
            p_values = np.minimum(1, 2 * np.minimum(stats.binom.cdf(k, m, 0.5), stats.binom.sf(k - 1, m, 0.5)))
            reject = p_values <= 0.05
            total += stats.binom.pmf(m, prompts, decisive_share) * stats.binom.pmf(k, m, p_win)[reject].sum()
        return total

    assert 0.74 <= exact_power(n) <= 0.86
    assert exact_power(n // 2) < 0.6


def test_prompts_needed_rejects_impossible_differences():
    with pytest.raises(ValueError, match="net_win_rate"):
        prompts_needed(0.0)
    with pytest.raises(ValueError, match="net_win_rate"):
        prompts_needed(0.6, tie_rate=0.5)


def test_minimal_detectable_difference_by_hand():
    differences = np.array([0.5, -0.5, 0.0, 1.0, 0.0, 0.5])
    expected = (1.959963984540054 + 0.8416212335729143) * differences.std(ddof=1) / math.sqrt(6)
    assert minimal_detectable_difference(differences) == pytest.approx(expected)
    assert minimal_detectable_difference([0.3]) is None
