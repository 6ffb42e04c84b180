"""Wall time of every statistic an evaluation report shows, on simulated judgments.

Default size: 5 models → 10 comparisons × 600 prompts × 5 votes, 10,000 bootstrap resamples.
Per comparison: visual flaws and visual appeal (majority labels, Wilson and Goodman intervals,
net win BCa bootstrap, sign test, Fleiss' κ and Krippendorff's α with bootstrap CIs), text
alignment (DSG rule, McNemar, paired bootstrap); then Holm over the table, and a Bradley–Terry
leaderboard with bootstrap CIs for each criterion. Simulating the judgments is not timed.

    python bench/eval_report.py [--models 5] [--prompts 600] [--votes 5] [--resamples 10000]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.stats import CRITERIA, AlignmentQuestion, ComparisonVotes, summarize_report  # noqa: E402

LABELS = np.array(["A", "tie", "B"])


def simulate(models: int, prompts: int, votes: int, seed: int) -> dict[str, Any]:
    """Votes per comparison and criterion, and alignment questions per model and prompt."""
    rng = np.random.default_rng(seed)
    names = [f"model_{index}" for index in range(models)]
    quality = dict(zip(names, np.linspace(-0.6, 0.6, models)))
    pairwise: dict[tuple[str, str, str], list[list[str]]] = {}
    for a, b in itertools.combinations(names, 2):
        for criterion in CRITERIA:
            p_a = 1 / (1 + math.exp(quality[b] - quality[a]))
            # Each prompt has its own true outcome; annotators agree with it 70% of the time.
            truth = rng.choice(3, size=prompts, p=[0.6 * p_a, 0.4, 0.6 * (1 - p_a)])
            noise = rng.integers(0, 3, size=(prompts, votes))
            chosen = np.where(rng.random((prompts, votes)) < 0.7, truth[:, None], noise)
            pairwise[(a, b, criterion)] = LABELS[chosen].tolist()
    n_questions = rng.integers(0, 6, size=prompts)  # some prompts have none
    alignment: dict[str, dict[str, list[AlignmentQuestion]]] = {}
    for name in names:
        p_yes = 0.75 + 0.1 * quality[name]
        alignment[name] = {
            f"p{prompt}": [
                AlignmentQuestion(
                    f"q{q}", tuple(bool(v) for v in rng.random(votes) < p_yes),
                    ("q0",) if q > 0 else (),
                )
                for q in range(n_questions[prompt])
            ]
            for prompt in range(prompts)
        }
    return {"names": names, "pairwise": pairwise, "alignment": alignment}


def report_comparisons(data: dict[str, Any]) -> list[ComparisonVotes]:
    return [
        ComparisonVotes(
            a, b,
            visual_flaws=data["pairwise"][(a, b, "visual_flaws")],
            visual_appeal=data["pairwise"][(a, b, "visual_appeal")],
            alignment_a=data["alignment"][a],
            alignment_b=data["alignment"][b],
        )
        for a, b in itertools.combinations(data["names"], 2)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=5, help="models; comparisons = models·(models−1)/2")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--votes", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="report the fastest of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = simulate(args.models, args.prompts, args.votes, args.seed)
    comparisons = args.models * (args.models - 1) // 2
    print(
        f"{comparisons} comparisons × {args.prompts} prompts × {args.votes} votes, "
        f"{args.resamples} bootstrap resamples"
    )
    report_input = report_comparisons(data)
    runs = []
    for run in range(args.repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        report = summarize_report(report_input, n_resamples=args.resamples, seed=run)
        total = time.perf_counter() - start
        runs.append(total)
        # CPU time (all threads) shows how much of the wall time other processes took.
        print(f"run {run + 1}: {total:.3f} s wall, {time.process_time() - cpu_start:.3f} s CPU")
    first = report.table[0]
    print(
        f"check: {first['model_a']} vs {first['model_b']} visual flaws A wins "
        f"{first['visual_flaws']['a_wins']['rate']:.3f}, net win CI "
        f"[{first['visual_flaws']['net_win_rate']['ci_low']:.3f}, "
        f"{first['visual_flaws']['net_win_rate']['ci_high']:.3f}], "
        f"leaderboards: {', '.join(report.leaderboards)}"
    )
    print(f"best wall time: {min(runs):.3f} s (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
