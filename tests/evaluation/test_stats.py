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
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import multinomial_proportions_confint, proportion_confint

from annotation.voting import dsg_apply, question_majority
from evaluation.stats import (
    ComparisonRow,
    PairCounts,
    PromptBootstrap,
    adjust_p_values,
    annotator_majority_agreement,
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
    prompts_needed,
    summarize_agreement,
    summarize_alignment,
    summarize_pairwise,
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


@pytest.mark.parametrize(("wins", "ties", "losses"), [(0, 18, 2), (2, 18, 0), (0, 7, 3), (1, 97, 0)])
def test_every_decisive_prompt_one_way_still_gives_the_prompts_needed(wins, ties, losses):
    # |net| = 1 − tie rate exactly in counts, a hair above it in floating point (0.1 against 1 − 0.9).
    summary = summarize_pairwise(labels_from_counts(wins, ties, losses), bootstrap=PromptBootstrap(300))
    assert summary.sign_test_p > 0.05
    assert summary.prompts_needed > wins + ties + losses
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


def test_holm_and_bh_equal_statsmodels_multipletests():
    rng = np.random.default_rng(12)
    cases = [rng.random(size) ** 3 for size in (1, 2, 5, 12, 30)]
    cases += [np.array([0.01, 0.01, 0.04, 0.5, 0.5, 1.0]), np.array([0.0, 1.0, 0.3])]
    for p_values in cases:
        for method in ("holm", "fdr_bh"):
            expected = multipletests(p_values, method=method)[1]
            assert adjust_p_values(list(p_values), method=method) == pytest.approx(
                list(expected), abs=1e-15
            )


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
            tail = np.minimum(stats.binom.cdf(k, m, 0.5), stats.binom.sf(k - 1, m, 0.5))
            p_values = np.minimum(1, 2 * tail)
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


# --- text alignment ------------------------------------------------------------------------


def question(question_id: str, yes: int, no: int, parents: tuple[str, ...] = ()):
    return question_id, (True,) * yes + (False,) * no, parents


def outcomes(prompts) -> dict[str, dict[str, bool]]:
    """Each prompt's final answers under annotation.voting: majority of K = the votes given, then DSG."""
    result = {}
    for prompt, questions in prompts.items():
        majority = {q: question_majority(sum(votes), k=len(votes), n_votes=len(votes)) for q, votes, _ in questions}
        result[prompt] = dsg_apply(majority, {q: parents for q, _, parents in questions})
    return result


def test_alignment_rate_averages_per_prompt_then_over_prompts():
    prompts = {
        "p1": [question("q1", 5, 0), question("q2", 1, 4)],  # 1/2
        "p2": [question("q1", 4, 1)],                        # 1/1
        "p3": [question("q1", 0, 5), question("q2", 5, 0, ("q1",)), question("q3", 3, 2)],  # 1/3
        "p4": [],
    }
    assert outcomes(prompts)["p3"] == {"q1": False, "q2": False, "q3": True}
    summary = summarize_alignment(outcomes(prompts), bootstrap=PromptBootstrap(300))
    assert summary.rate == pytest.approx((0.5 + 1.0 + 1 / 3) / 3)  # not the pooled 3/6
    assert summary.n_prompts == 3 and summary.prompts_without_questions == 1
    assert "1 prompt without alignment questions" in summary.message


def test_a_model_without_alignment_questions_gives_a_message():
    summary = summarize_alignment({"p1": [], "p2": []})
    assert summary.rate is None and summary.ci is None
    assert "No prompt has alignment questions" in summary.message
    comparison = compare_alignment(outcomes({"p1": [question("q1", 5, 0)]}), {"p1": {}})
    assert comparison.difference is None and comparison.mcnemar_p is None
    assert "cannot be compared" in comparison.message
    assert_no_nan(comparison.to_dict())


def simulated_alignment(seed: int, n_prompts: int, p_a: float, p_b: float):
    rng = np.random.default_rng(seed)
    model_a: dict[str, list] = {}
    model_b: dict[str, list] = {}
    for prompt in range(n_prompts):
        # 1, 2 or 4 questions keep prompt scores dyadic, so sums over prompts are exact in floating
        # point and bootstrap values that equal the estimate compare equal in scipy too.
        n_questions = int(rng.choice([1, 2, 4]))
        for model, p_yes in ((model_a, p_a), (model_b, p_b)):
            model[f"p{prompt}"] = [
                (f"q{q}", tuple(bool(v) for v in rng.random(5) < p_yes), ("q0",) if q > 0 else ())
                for q in range(n_questions)
            ]
    return outcomes(model_a), outcomes(model_b)


def test_compare_alignment_matches_independent_mcnemar_and_paired_bootstrap():
    model_a, model_b = simulated_alignment(seed=1, n_prompts=80, p_a=0.75, p_b=0.6)
    comparison = compare_alignment(model_a, model_b, bootstrap=PromptBootstrap(2000, seed=4))
    outcomes_a, outcomes_b = model_a, model_b
    table = np.zeros((2, 2), dtype=int)
    scores_a, scores_b = [], []
    for prompt in outcomes_a:
        for q, answer_a in outcomes_a[prompt].items():
            table[0 if answer_a else 1, 0 if outcomes_b[prompt][q] else 1] += 1
        scores_a.append(np.mean(list(outcomes_a[prompt].values())))
        scores_b.append(np.mean(list(outcomes_b[prompt].values())))
    assert comparison.mcnemar_p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    discordant = table[0, 1] + table[1, 0]
    assert comparison.mcnemar_p == pytest.approx(stats.binomtest(table[0, 1], discordant).pvalue)
    assert (comparison.a_only, comparison.b_only) == (table[0, 1], table[1, 0])
    assert comparison.rate_a == pytest.approx(np.mean(scores_a))
    assert comparison.difference == pytest.approx(np.mean(scores_a) - np.mean(scores_b))
    expected = stats.bootstrap(
        (np.array(scores_a), np.array(scores_b)), lambda a, b, axis: np.mean(a - b, axis=axis),
        paired=True, n_resamples=2000, method="BCa", rng=np.random.default_rng(4),
    ).confidence_interval
    assert (comparison.difference_ci.low, comparison.difference_ci.high) == pytest.approx(
        (expected.low, expected.high), abs=1e-9
    )
    assert comparison.minimal_detectable_difference == pytest.approx(
        minimal_detectable_difference(np.array(scores_a) - np.array(scores_b))
    )


def test_within_margin_of_error_follows_the_difference_interval():
    same_a, same_b = simulated_alignment(seed=2, n_prompts=60, p_a=0.7, p_b=0.7)
    close = compare_alignment(same_a, same_b, bootstrap=PromptBootstrap(1000))
    assert close.within_margin_of_error == close.difference_ci.contains(0.0)
    apart_a, apart_b = simulated_alignment(seed=3, n_prompts=200, p_a=0.9, p_b=0.4)
    apart = compare_alignment(apart_a, apart_b, bootstrap=PromptBootstrap(1000))
    assert apart.difference_ci.low > 0 and apart.within_margin_of_error is False
    assert apart.mcnemar_p < 1e-6


# --- agreement -----------------------------------------------------------------------------

# Fleiss (1971)-style example: 10 items, 14 raters, 5 categories; κ ≈ 0.210.
FLEISS_TABLE = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def test_fleiss_kappa_matches_statsmodels():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(statsmodels_fleiss_kappa(FLEISS_TABLE), abs=1e-12)
    assert round(fleiss_kappa(FLEISS_TABLE), 3) == 0.210
    rng = np.random.default_rng(0)
    votes = [list(rng.choice(["A", "tie", "B"], size=5, p=[0.5, 0.3, 0.2])) for _ in range(200)]
    table = vote_table(votes, ["A", "tie", "B"])
    assert fleiss_kappa(table) == pytest.approx(statsmodels_fleiss_kappa(table), abs=1e-12)


def reliability_table(data: list[list[int | None]]) -> np.ndarray:
    """Observers × units reliability data (None = missing) → units × categories counts."""
    units = [[row[u] for row in data if row[u] is not None] for u in range(len(data[0]))]
    categories = sorted({v for unit in units for v in unit})
    return vote_table([[str(v) for v in unit] for unit in units], [str(c) for c in categories])


def test_krippendorff_alpha_on_the_textbook_examples():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", §C: 4 observers,
    # 12 units, missing data, nominal α = 0.743.
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    assert round(krippendorff_alpha_nominal(reliability_table(data)), 3) == 0.743
    # Same paper, §A: two observers, binary data. By hand: n = 20, n₀ = 14, n₁ = 6,
    # o₀₀ + o₁₁ = 12, α = 1 − 19·(20 − 12)/(400 − 14² − 6²) = 1 − 152/168 = 0.0952.
    binary = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]
    assert krippendorff_alpha_nominal(reliability_table(binary)) == pytest.approx(1 - 152 / 168)


def test_krippendorff_alpha_and_fleiss_kappa_agree_on_large_complete_data():
    # With every item fully rated, α and Fleiss' κ differ only by a small-sample correction of
    # order 1/(items · votes), so for 2000 items they agree to about 3 decimals.
    rng = np.random.default_rng(5)
    truth = rng.choice(3, size=2000, p=[0.5, 0.3, 0.2])
    votes = [[str(t if rng.random() < 0.7 else rng.integers(3)) for _ in range(5)] for t in truth]
    table = vote_table(votes, ["0", "1", "2"])
    assert krippendorff_alpha_nominal(table) == pytest.approx(fleiss_kappa(table), abs=2e-3)


def test_agreement_bootstrap_interval_equals_scipy_bootstrap_over_items():
    rng = np.random.default_rng(8)
    truth = rng.choice(3, size=60, p=[0.5, 0.3, 0.2])
    votes = [[str(t if rng.random() < 0.6 else rng.integers(3)) for _ in range(5)] for t in truth]
    table = vote_table(votes, ["0", "1", "2"])
    summary = summarize_agreement(table, bootstrap=PromptBootstrap(1500, seed=2))
    expected = stats.bootstrap(
        (np.arange(60),), lambda items: statsmodels_fleiss_kappa(table[items]),
        vectorized=False, paired=False, n_resamples=1500, method="BCa",
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert summary.fleiss_kappa == pytest.approx(statsmodels_fleiss_kappa(table))
    assert (summary.kappa_ci.low, summary.kappa_ci.high) == pytest.approx(
        (expected.low, expected.high), abs=1e-9
    )
    assert summary.alpha_ci.low < summary.krippendorff_alpha < summary.alpha_ci.high


def test_agreement_edge_cases_give_messages():
    unanimous = vote_table([["A"] * 5] * 10, ["A", "tie", "B"])
    summary = summarize_agreement(unanimous, bootstrap=PromptBootstrap(100))
    assert summary.fleiss_kappa is None and "undefined" in summary.message
    ragged = vote_table([["A", "A", "B"], ["A", "B"], ["B", "B", "B", "A"]], ["A", "tie", "B"])
    summary = summarize_agreement(ragged, bootstrap=PromptBootstrap(100))
    assert summary.fleiss_kappa is None and "different numbers of votes" in summary.message
    assert summary.krippendorff_alpha is not None
    assert_no_nan(summary.to_dict())


def test_annotator_agreement_with_the_majority_of_the_others():
    judgments = [
        ("i1", "ann", "A"), ("i1", "bob", "A"), ("i1", "cat", "A"), ("i1", "dan", "B"),
        ("i2", "ann", "B"), ("i2", "bob", "B"), ("i2", "cat", "tie"), ("i2", "dan", "B"),
        ("i3", "ann", "A"), ("i3", "bob", "B"), ("i3", "cat", "tie"), ("i3", "dan", "tie"),
    ]
    scores = annotator_majority_agreement(judgments)
    # ann: i1 others A,A,B → A ✓; i2 others B,tie,B → B ✓; i3 others B,tie,tie → tie ✗.
    assert (scores["ann"].matches, scores["ann"].n) == (2, 3)
    # dan: i1 others A,A,A → A ✗; i2 others B,B,tie → B ✓; i3 others A,B,tie → none.
    assert (scores["dan"].matches, scores["dan"].n) == (1, 2)
    low, high = proportion_confint(2, 3, method="wilson")
    assert (scores["ann"].ci.low, scores["ann"].ci.high) == pytest.approx((low, high))
    with pytest.raises(ValueError, match="voted twice on item 'i1'"):
        annotator_majority_agreement([("i1", "ann", "A"), ("i1", "ann", "B")])


def test_gold_accuracy_per_annotator():
    judgments = [("g1", "ann", "A"), ("g2", "ann", "B"), ("x", "ann", "B"),
                 ("g1", "bob", "B"), ("x", "cat", "A")]
    scores = gold_accuracy(judgments, {"g1": "A", "g2": "tie"})
    assert (scores["ann"].matches, scores["ann"].n, scores["ann"].rate) == (1, 2, 0.5)
    assert (scores["bob"].matches, scores["bob"].n) == (0, 1)
    assert scores["cat"].rate is None and scores["cat"].n == 0


# --- Bradley–Terry -------------------------------------------------------------------------


def simulated_pairs(strengths: dict[str, float], n: int, seed: int) -> list[PairCounts]:
    rng = np.random.default_rng(seed)
    names = list(strengths)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p_a = 1 / (1 + math.exp(strengths[b] - strengths[a]))
            tie = 0.3
            wins, ties, losses = rng.multinomial(n, [(1 - tie) * p_a, tie, (1 - tie) * (1 - p_a)])
            pairs.append(PairCounts(a, b, int(wins), int(ties), int(losses)))
    return pairs


def test_bradley_terry_recovers_the_order_of_simulated_strengths():
    truth = {"base": -1.0, "sft": -0.3, "sft_pixel": 0.2, "dpo": 0.6, "dpo_pixel": 1.2}
    board = bradley_terry(simulated_pairs(truth, 600, seed=0), n_resamples=500)
    assert [entry.model for entry in board] == sorted(truth, key=truth.get, reverse=True)
    for entry in board:
        assert entry.ci.low < entry.strength < entry.ci.high


def test_bradley_terry_matches_a_direct_likelihood_maximization():
    pairs = simulated_pairs({"a": 0.0, "b": 0.5, "c": -0.4, "d": 0.9}, 80, seed=1)
    models = ["a", "b", "c", "d"]
    wins = np.zeros((4, 4))
    for p in pairs:
        i, j = models.index(p.model_a), models.index(p.model_b)
        wins[i, j] += p.wins + 0.5 * p.ties + 0.5  # + half of the one virtual tie (prior = 1)
        wins[j, i] += p.losses + 0.5 * p.ties + 0.5

    def negative_log_likelihood(theta: np.ndarray) -> float:
        diff = theta[:, None] - theta[None, :]
        return float(np.sum(wins * np.logaddexp(0, -diff)))

    fitted = optimize.minimize(negative_log_likelihood, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    fitted -= fitted.mean()
    board = {entry.model: entry.strength for entry in bradley_terry(pairs, n_resamples=50)}
    assert [board[m] for m in models] == pytest.approx(list(fitted), abs=1e-5)


def test_bradley_terry_keeps_a_model_that_never_wins_finite():
    pairs = [PairCounts("good", "bad", 50, 0, 0), PairCounts("good", "mid", 30, 10, 10),
             PairCounts("mid", "bad", 45, 5, 0)]
    board = bradley_terry(pairs, n_resamples=300)
    assert [entry.model for entry in board] == ["good", "mid", "bad"]
    assert all(math.isfinite(e.strength) and math.isfinite(e.ci.low) for e in board)
    with pytest.raises(ValueError, match="prior must be positive"):
        bradley_terry_strengths(np.array([[0.0, 5.0], [0.0, 0.0]]), prior=0.0)


def test_bradley_terry_rejects_disconnected_models():
    with pytest.raises(ValueError, match="2 groups never compared"):
        bradley_terry([PairCounts("a", "b", 3, 1, 2), PairCounts("c", "d", 4, 0, 1)])


# --- the paper's table layout --------------------------------------------------------------


def test_paper_table_rows_are_plain_json_with_holm_adjusted_p_values():
    bootstrap = PromptBootstrap(300)
    model_a, model_b = simulated_alignment(seed=6, n_prompts=40, p_a=0.8, p_b=0.7)
    rows = [
        ComparisonRow(
            "sft_pixel", "sft",
            summarize_pairwise(labels_from_counts(385, 159, 56), bootstrap=bootstrap),
            summarize_pairwise(labels_from_counts(281, 231, 88), bootstrap=bootstrap),
            compare_alignment(model_a, model_b, bootstrap=bootstrap),
        ),
        ComparisonRow(
            "dpo", "base", summarize_pairwise(["tie"] * 10, bootstrap=bootstrap), None,
            compare_alignment(model_a, {}, bootstrap=bootstrap),
        ),
    ]
    table = paper_table_rows(rows)
    json.dumps(table, allow_nan=False)
    first = table[0]
    assert (first["model_a"], first["model_b"]) == ("sft_pixel", "sft")
    flaws = first["visual_flaws"]
    assert (flaws["a_wins"]["count"], flaws["tie"]["count"], flaws["b_wins"]["count"]) == (385, 159, 56)
    assert round(100 * flaws["a_wins"]["rate"], 1) == 64.2
    assert flaws["a_wins"]["ci_low"] < flaws["a_wins"]["rate"] < flaws["a_wins"]["ci_high"]
    raw = [first["visual_flaws"]["p_value"], first["visual_appeal"]["p_value"],
           first["text_alignment"]["p_value"]]
    expected = adjust_p_values(raw + [None, None, None])
    assert [first["visual_flaws"]["p_adjusted"], first["visual_appeal"]["p_adjusted"],
            first["text_alignment"]["p_adjusted"]] == pytest.approx(expected[:3])
    second = table[1]
    assert second["visual_appeal"] is None
    assert second["visual_flaws"]["p_value"] is None and second["visual_flaws"]["p_adjusted"] is None
    assert "cannot be compared" in second["text_alignment"]["message"]


def test_bradley_terry_newton_refit_reaches_the_mm_maximum():
    rng = np.random.default_rng(0)
    wins = rng.integers(0, 50, (40, 5, 5)).astype(float)
    wins[:, range(5), range(5)] = 0
    wins[0, 2, :] = 0  # one resample where a model never wins
    by_mm = bradley_terry_strengths(wins)
    by_newton = bradley_terry_strengths(wins, initial=np.zeros(5))
    assert by_newton == pytest.approx(by_mm, abs=1e-8)
    assert np.all(np.isfinite(by_mm))
