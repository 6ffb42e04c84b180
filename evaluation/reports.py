"""The report of an evaluation round: the statistics module's numbers, from the database.

``evaluation_report_build`` reads the evaluation's annotation rounds (``selectors.evaluation_data``)
and hands per-prompt labels, vote tables and alignment answers to ``evaluation.stats``. The unit
is the prompt: within one comparison each prompt has one item per criterion, and its label is
that item's stored majority ("A" when the aggregate's winner image is Model A's, "B" when it is
Model B's, "tie"); its alignment answers are the stored per-question results. The report never
votes: ``annotation.voting`` decided every outcome when the aggregates were stored. Only
complete items count: K judgments, or, in a round closed early under ``count-partial``, enough
votes for a majority of the votes it has; the report states each round's rule and how many items
it touched, and how many are still open. Every undefined number is ``None`` with a message, never NaN.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, is_dataclass, replace
from typing import Any

from django.conf import settings

from annotation.criteria import Criterion
from annotation.models import Aggregate, Round
from evaluation import stats
from evaluation.models import EvaluationRound
from evaluation.selectors import EvaluationData, PairwiseItem, evaluation_data, round_data

CRITERIA = stats.CRITERIA
CRITERION_TITLES = {c.value: c.label for c in Criterion}
DEFAULT_RESAMPLES = 10_000


def bootstrap_resamples() -> int:
    return int(getattr(settings, "EVALUATION_BOOTSTRAP_RESAMPLES", None) or DEFAULT_RESAMPLES)


@dataclass(frozen=True)
class EvaluationReport:
    """Every number of an evaluation's report, as plain JSON-ready values (see ``to_dict``)."""

    evaluation: dict[str, Any]  # what the report is of: an evaluation, or one round (``round`` set)
    rounds: list[dict[str, Any]]  # each annotation round and how it counts its items (``round_closing``)
    table: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    alignment_by_model: list[dict[str, Any]] | None
    categories: list[dict[str, Any]]
    position_bias: dict[str, dict[str, Any]]
    annotators: list[dict[str, Any]]
    leaderboards: dict[str, list[dict[str, Any]]]
    judgments: dict[str, int]
    settings: dict[str, Any]
    messages: list[str]

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


def evaluation_report_build(
    *, evaluation: EvaluationRound, confidence: float = 0.95, n_resamples: int | None = None, seed: int = 0,
    p_adjust: str = "holm", power: float = 0.8,
) -> EvaluationReport:
    """Build the report of ``evaluation`` from its annotation rounds' complete items."""
    data = evaluation_data(evaluation=evaluation)
    return report_from_data(
        data, confidence=confidence, n_resamples=n_resamples or bootstrap_resamples(), seed=seed,
        p_adjust=p_adjust, power=power,
    )


def round_report_build(
    *, round_: Round, confidence: float = 0.95, n_resamples: int | None = None, seed: int = 0,
    p_adjust: str = "holm", power: float = 0.8,
) -> EvaluationReport:
    """The report of one pairwise or alignment round (``selectors.round_reportable``), made outside an evaluation."""
    return report_from_data(
        round_data(round_=round_), confidence=confidence, n_resamples=n_resamples or bootstrap_resamples(),
        seed=seed, p_adjust=p_adjust, power=power,
    )


def report_from_data(
    data: EvaluationData, *, confidence: float, n_resamples: int, seed: int, p_adjust: str, power: float
) -> EvaluationReport:
    names = dict(data.models)
    pairs = list(itertools.combinations([pk for pk, _ in data.models], 2))
    messages: list[str] = []
    bootstrap = stats.PromptBootstrap(n_resamples=n_resamples, seed=seed)

    if not data.pairwise and data.evaluation is not None and not data.rounds:
        messages.append("This evaluation has no pairwise annotation rounds yet (images are still being generated).")
    for entry in data.rounds:
        if entry["rule"]:
            messages.append(f"Round {entry['name']!r}: {closing_line(entry)}.")

    # Per comparison and criterion: the labels of complete items, their vote tables, position counts.
    steps: list[stats.Steps[Any]] = []
    slots: list[tuple] = []
    details: dict[tuple[int, int], dict[str, Any]] = {pair: {} for pair in pairs}
    category_labels: dict[tuple[int, int, str, str], list[str]] = defaultdict(list)
    rules = {r["criterion"]: r["rule"] for r in data.rounds if r["kind"] == Round.Kind.PAIRWISE}
    for criterion in CRITERIA:
        items_by_pair: dict[tuple[int, int], list[PairwiseItem]] = defaultdict(list)
        for item in data.pairwise.get(criterion, []):
            items_by_pair[(item.model_a, item.model_b)].append(item)
        for pair in pairs:
            if criterion not in data.pairwise:
                continue
            detail = _pairwise_detail(items_by_pair.get(pair, []), pair)
            detail["rule"] = rules.get(criterion, "")
            details[pair][criterion] = detail
            steps.append(stats.pairwise_steps(
                detail["labels"], confidence, no_majority=detail["no_majority"], power=power
            ))
            slots.append(("pairwise", pair, criterion))
            steps.append(_agreement_noted(
                stats.agreement_steps(stats.vote_table(detail["votes"], stats.LABELS), confidence), detail
            ))
            slots.append(("agreement", pair, criterion))
            for category, label in zip(detail["categories"], detail["labels"]):
                category_labels[(*pair, criterion, category)].append(label)

    decided = any(d["labels"] for by_criterion in details.values() for d in by_criterion.values())
    if data.judgments_total == 0 and not decided:
        messages.append("No judgments yet: every rate, interval and test below is undefined until annotators submit.")

    # Text alignment: per model outcomes over complete items, then paired comparisons.
    alignment_outcomes: dict[int, dict[str, dict[str, bool]]] | None = None
    if data.alignment is None:
        if "text_alignment" not in data.source.get("criteria", ["text_alignment"]):
            if data.evaluation is not None:
                messages.append("Text alignment is not among this evaluation's criteria: it is not measured.")
        elif data.pairwise:
            messages.append(
                "No prompt of this evaluation has alignment questions: text alignment is not measured."
            )
    else:
        alignment_outcomes = _alignment_outcomes(data)
        for model_pk, _ in data.models:
            steps.append(stats.alignment_steps(alignment_outcomes.get(model_pk, {}), confidence))
            slots.append(("alignment_model", model_pk, None))
        for pair in pairs:
            steps.append(stats.alignment_comparison_steps(
                alignment_outcomes.get(pair[0], {}), alignment_outcomes.get(pair[1], {}), confidence, power=power
            ))
            slots.append(("alignment_pair", pair, None))

    category_keys = sorted(category_labels, key=lambda key: (key[3], pairs.index(key[:2]), CRITERIA.index(key[2])))
    for key in category_keys:
        steps.append(stats.pairwise_steps(category_labels[key], confidence, power=power))
        slots.append(("category", key, None))

    results: dict[tuple, Any] = {}
    for slot, result in zip(slots, stats.run_with_bootstrap(steps, bootstrap)):
        results[slot] = result

    rows = []
    comparisons = []
    for pair in pairs:
        summaries = {c: results.get(("pairwise", pair, c)) for c in CRITERIA}
        agreement = {c: results.get(("agreement", pair, c)) for c in CRITERIA}
        summaries = {c: _with_notes(s, details[pair].get(c)) for c, s in summaries.items()}
        text_alignment = results.get(("alignment_pair", pair, None))
        rows.append(stats.ComparisonRow(
            model_a=names[pair[0]], model_b=names[pair[1]],
            visual_flaws=summaries["visual_flaws"], visual_appeal=summaries["visual_appeal"],
            text_alignment=text_alignment,
            visual_flaws_agreement=agreement["visual_flaws"], visual_appeal_agreement=agreement["visual_appeal"],
        ))
        comparison = {"model_a": names[pair[0]], "model_b": names[pair[1]]}
        for criterion in CRITERIA:
            detail = details[pair].get(criterion)
            if detail is None:
                comparison[criterion] = None
                continue
            bias = stats.position_bias_test(detail["left_wins"], detail["right_wins"])
            comparison[criterion] = {
                "summary": summaries[criterion],
                "agreement": agreement[criterion],
                "position_bias": bias,
                "items": detail["items"],
                "items_complete": detail["items_complete"],
                "unresolved": detail["unresolved"],
            }
        comparison["text_alignment"] = text_alignment
        comparisons.append(comparison)
    table = stats.paper_table_rows(rows, p_adjust=p_adjust)
    n_tests = stats.table_tests(rows)
    if n_tests:
        run = [CRITERION_TITLES.get(c, "text alignment").lower() for c in (*CRITERIA, "text_alignment")
               if any(cells.get(c) and cells[c]["p_value"] is not None for cells in table)]
        tests = f"{n_tests} test{'s' if n_tests != 1 else ''}"
        messages.append(
            f"Adjusted p-values: {p_adjust} over the {tests} actually run in the table ({', '.join(run)}); "
            "a criterion without a round, or without decided prompts, adds no test."
        )

    alignment_by_model = None
    if alignment_outcomes is not None:
        alignment_by_model = [
            {"model": name, "summary": results[("alignment_model", pk, None)]} for pk, name in data.models
        ]
        for entry in alignment_by_model:
            if entry["summary"].n_prompts == 0:
                messages.append(f"{entry['model']}: no answered alignment questions, so no text alignment rate.")

    categories = []
    category_summaries = [results[("category", key, None)] for key in category_keys]
    adjusted = stats.adjust_p_values([s.sign_test_p for s in category_summaries], method=p_adjust)
    for key, summary, p_adjusted in zip(category_keys, category_summaries, adjusted):
        model_a, model_b, criterion, category = key
        categories.append({
            "category": category, "model_a": names[model_a], "model_b": names[model_b], "criterion": criterion,
            "summary": summary, "p_adjusted": p_adjusted,
        })

    position_bias = {}
    for criterion in CRITERIA:
        left = sum(d[criterion]["left_wins"] for d in details.values() if criterion in d)
        right = sum(d[criterion]["right_wins"] for d in details.values() if criterion in d)
        if criterion in data.pairwise:
            position_bias[criterion] = stats.position_bias_test(left, right)

    leaderboards = {}
    if len(data.models) > 2:
        for criterion in CRITERIA:
            counts = [
                stats.PairCounts(row.model_a, row.model_b, s.wins, s.ties, s.losses)
                for row in rows if (s := getattr(row, criterion)) is not None and s.n > 0
            ]
            if len({c.model_a for c in counts} | {c.model_b for c in counts}) < 3:
                messages.append(f"{CRITERION_TITLES[criterion]}: too few decided comparisons for a leaderboard yet.")
                continue
            try:
                leaderboards[criterion] = stats.bradley_terry(
                    counts, confidence, n_resamples=n_resamples, seed=seed
                )
            except ValueError as error:
                messages.append(f"{CRITERION_TITLES[criterion]}: no leaderboard: {error}")

    return EvaluationReport(
        evaluation=dict(data.source),
        rounds=data.rounds,
        table=table,
        comparisons=comparisons,
        alignment_by_model=alignment_by_model,
        categories=categories,
        position_bias=position_bias,
        annotators=_annotator_scores(data, confidence),
        leaderboards=leaderboards,
        judgments={
            "total": data.judgments_total, "synthetic": data.judgments_synthetic,
            "human": data.judgments_total - data.judgments_synthetic, "skips": data.skips_total,
        },
        settings={
            "confidence": confidence, "n_resamples": n_resamples, "seed": seed, "p_adjust": p_adjust,
            "p_adjust_tests": n_tests, "power": power,
        },
        messages=messages,
    )


def _pairwise_detail(items: list[PairwiseItem], pair: tuple[int, int]) -> dict[str, Any]:
    """Labels of one comparison's complete items (in prompt order), their votes and position counts."""
    labels, votes, categories = [], [], []
    no_majority = unresolved = left = right = complete = short = 0
    for item in sorted(items, key=lambda i: i.prompt_id):
        left, right = left + item.left_wins, right + item.right_wins
        if not item.complete:
            continue
        complete += 1
        short += int(item.short)
        if item.outcome == Aggregate.Outcome.WINNER:
            label = "A" if item.winner == item.image_a else "B"
        elif item.outcome == Aggregate.Outcome.TIE:
            label = "tie"
        else:  # every vote was "cannot compare": the prompt has no label
            unresolved += 1
            continue
        labels.append(label)
        categories.append(item.category)
        no_majority += int(item.no_majority)
        votes.append([vote for _, vote in item.votes if vote != "reject"])
    return {
        "labels": labels, "votes": votes, "categories": categories, "no_majority": no_majority,
        "unresolved": unresolved, "left_wins": left, "right_wins": right, "items": len(items),
        "items_complete": complete, "items_short": short, "items_judged": sum(1 for i in items if i.votes),
    }


def closing_line(entry: dict[str, Any]) -> str:
    """How a round counts its items, in words (``RoundClosing.line``'s words, from the report's dict)."""
    if entry["rule"] == Round.CloseRule.COUNT_PARTIAL:
        short = (f"{entry['decided_short']} decided by the majority of the votes they have, "
                 f"{entry['left_out']} undecided (too few votes) and left out")
    elif entry["rule"]:
        short = f"{entry['left_out']} short of K left out"
    else:
        short = f"{entry['left_out']} still open"
    state = f"closed under {entry['rule']}" if entry["rule"] else entry["status"]
    return f"{state}: {entry['complete_k']} of {entry['items']} items with K = {entry['k']} judgments, {short}"


def _agreement_noted(steps, detail: dict[str, Any]):
    """Agreement steps whose "no items" message says why: no items, no judgments, or no complete item yet."""
    summary = yield from steps
    if summary.n_items or detail["items_complete"]:
        return summary
    if detail["items"] == 0:
        why = "This comparison has no items"
    elif detail["items_judged"] == 0:
        why = f"No judgments yet on its {detail['items']} items"
    else:
        why = f"{detail['items_judged']} of its {detail['items']} items have judgments, but not one is complete yet"
    return replace(summary, message=f"{why}: agreement is undefined.")


def _with_notes(summary, detail) -> Any:
    if summary is None or detail is None:
        return summary
    notes = []
    if detail["items"] == 0:
        notes.append("This comparison has no items.")
    elif detail["items_complete"] < detail["items"] and detail.get("rule"):
        left_out = detail["items"] - detail["items_complete"]
        why = ("too few votes for a decision (count-partial needs ⌈K/2⌉ + 1)"
               if detail["rule"] == Round.CloseRule.COUNT_PARTIAL else "fewer than K judgments (drop-partial)")
        notes.append(
            f"{left_out} of {detail['items']} prompts had {why} when the round closed and are left out; "
            f"the numbers use the {detail['items_complete']} decided ones."
        )
    elif detail["items_complete"] < detail["items"]:
        notes.append(
            f"{detail['items'] - detail['items_complete']} of {detail['items']} prompts still need judgments; "
            f"the numbers use the {detail['items_complete']} complete ones."
        )
    if detail["items_short"]:
        notes.append(
            f"{detail['items_short']} prompts were decided with fewer than K judgments, by the majority of the "
            "votes each has (the round was closed under count-partial)."
        )
    if detail["unresolved"]:
        notes.append(f"{detail['unresolved']} prompts were rejected by every annotator (cannot compare) and are left out.")
    if detail["no_majority"]:
        notes.append(f"{detail['no_majority']} prompts had no majority and counted by the round's rule (default: a tie).")
    if not notes:
        return summary
    text = " ".join(([summary.message] if summary.message else []) + notes)
    return replace(summary, message=text)


def _alignment_outcomes(data: EvaluationData) -> dict[int, dict[str, dict[str, bool]]]:
    """Per model: prompt -> question -> final yes/no as stored by aggregation, complete items only."""
    per_model: dict[int, dict[str, dict[str, bool]]] = defaultdict(dict)
    for item in data.alignment or []:
        if item.complete and item.answers:
            per_model[item.model][str(item.prompt_id)] = dict(item.answers)
    return dict(per_model)


def _annotator_scores(data: EvaluationData, confidence: float) -> list[dict[str, Any]]:
    """Each annotator's agreement with the majority of the others (pairwise votes) and gold accuracy."""
    triples = [
        (f"{criterion}:{item.item_id}", str(annotator), label)
        for criterion, items in data.pairwise.items()
        for item in items
        if item.complete
        for annotator, label in item.votes
        if label != "reject"
    ]
    agreement = stats.annotator_majority_agreement(triples, confidence)
    scores = []
    for annotator_id, info in sorted(data.annotators.items(), key=lambda kv: kv[1]["username"]):
        score = agreement.get(str(annotator_id))
        gold = data.gold.get(annotator_id)
        scores.append({
            "annotator": info["username"], "synthetic": info["synthetic"], "judgments": info["judgments"],
            "skips": info.get("skips", 0), "majority_agreement": score,
            "gold_accuracy": gold[0] if gold else None, "gold_judgments": gold[1] if gold else 0,
        })
    if data.excluded_annotators:
        scores.append({
            "annotator": f"{len(data.excluded_annotators)} annotators excluded for gold accuracy",
            "synthetic": False, "judgments": 0, "skips": 0, "majority_agreement": None, "gold_accuracy": None,
            "gold_judgments": 0, "excluded": True,
        })
    return scores


def _plain(value: Any) -> Any:
    """Dataclasses to dicts, tuples to lists, and any non-finite float to None (never NaN in output)."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item())
    return value


