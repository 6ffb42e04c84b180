"""Read-side queries of the evaluation app: evaluation rounds, and the judgments a report is built from."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, Max, Q

from annotation import voting
from annotation.kinds.pairwise import Pairwise
from annotation.models import Aggregate, Item, ItemImage, Judgment, Lease, Round
from annotation.selectors import annotators_excluded, gold_accuracy, round_closing
from catalog.models import GenerationJob, ModelVersion
from evaluation.models import EvaluationRound, StoredReport

UNCATEGORIZED = "(no category)"


def evaluation_rounds_list():
    return EvaluationRound.objects.select_related("prompt_set", "created_by").annotate(
        n_jobs=Count("generation_batch__jobs", distinct=True),
        n_jobs_done=Count(
            "generation_batch__jobs", filter=Q(generation_batch__jobs__status=GenerationJob.Status.DONE), distinct=True
        ),
    ).prefetch_related("entries__model_version")


@dataclass(frozen=True)
class ReportSourceState:
    """What an evaluation's report is computed from, in a few numbers: equal states, equal reports."""

    key: str
    judgment_count: int


def report_source_state(*, evaluation: EvaluationRound, n_resamples: int) -> ReportSourceState:
    """The evaluation's status, rounds (and how each closed), judgments (submitted and undone) and latest aggregate change.

    Any submission, undo, or aggregate recompute (gold answers, exclusions) changes the key, and
    so does the bootstrap setting the report is computed with.
    """
    closings = sorted(evaluation.annotation_rounds.values_list("pk", "status", "close_rule"))
    rounds = [pk for pk, _status, _rule in closings]
    judgments = Judgment.objects.filter(round_id__in=rounds).aggregate(
        total=Count("id"), live=Count("id", filter=Q(undone_at__isnull=True))
    )
    latest = Aggregate.objects.filter(round_id__in=rounds).aggregate(latest=Max("updated_at"))["latest"]
    skips = Lease.objects.filter(round_id__in=rounds, state=Lease.State.SKIPPED).count()
    key = "|".join([
        evaluation.status, ",".join(f"{pk}:{status}:{rule}" for pk, status, rule in closings), str(judgments["total"]),
        str(judgments["live"]), str(skips),
        latest.isoformat() if latest else "-", str(n_resamples),
    ])
    return ReportSourceState(key=key, judgment_count=judgments["live"])


def stored_report(*, evaluation: EvaluationRound) -> StoredReport | None:
    return StoredReport.objects.filter(evaluation=evaluation).first()


def evaluations_comparing(*, model_version: ModelVersion, other: ModelVersion) -> list[tuple[EvaluationRound, StoredReport | None]]:
    """The evaluations that compare the two models, newest first, each with its stored report (None before the first)."""
    evaluations = list(
        EvaluationRound.objects.filter(entries__model_version=model_version).filter(entries__model_version=other)
        .distinct().order_by("-created_at", "-id")
    )
    reports = StoredReport.objects.in_bulk([e.pk for e in evaluations])
    return [(evaluation, reports.get(evaluation.pk)) for evaluation in evaluations]


@dataclass
class PairwiseItem:
    """One non-gold pairwise item: its prompt, the models of its images in storage order, its votes."""

    item_id: int
    prompt_id: int
    category: str
    model_a: int
    model_b: int
    image_a: int
    image_b: int
    complete: bool = False
    outcome: str = Aggregate.Outcome.PENDING
    winner: int | None = None
    no_majority: bool = False
    short: bool = False  # decided with fewer than K judgments (its round closed under count-partial)
    votes: list[tuple[int, str]] = field(default_factory=list)  # (annotator id, "A" | "tie" | "B" | "reject")
    left_wins: int = 0
    right_wins: int = 0


@dataclass
class AlignmentItem:
    """One non-gold alignment item and its stored result: question id -> final yes (majority, then DSG)."""

    item_id: int
    prompt_id: int
    category: str
    model: int
    complete: bool = False
    short: bool = False
    answers: dict[str, bool] = field(default_factory=dict)


@dataclass
class EvaluationData:
    """Everything a report needs, read from the database in a few queries."""

    evaluation: EvaluationRound | None  # None: the report of one annotation round (``round_data``)
    source: dict  # what the report is of: id, name, prompt set, models, seed, K, status
    rounds: list[dict]  # per annotation round: name, kind, criterion and how it counts its items (``round_closing``)
    models: list[tuple[int, str]]
    pairwise: dict[str, list[PairwiseItem]]  # criterion -> items
    alignment: list[AlignmentItem] | None  # None: the evaluation has no alignment round
    annotators: dict[int, dict]  # annotator id -> {"username", "synthetic", "judgments"}
    gold: dict[int, tuple[float, int]]  # annotator id -> (mean gold score, gold judgments)
    judgments_total: int
    judgments_synthetic: int
    excluded_annotators: set[int]
    skips_total: int = 0  # items annotators declined (skipped): no judgment, the slot went to another


def evaluation_data(*, evaluation: EvaluationRound) -> EvaluationData:
    """Read an evaluation's items, their stored aggregates and the counted judgments.

    Outcomes come from the aggregates only (``annotation.voting`` decided them); the judgments
    give vote tables, screen positions and annotator scores. Judgments that were undone, and
    those of annotators the round excludes for their gold accuracy, are not counted, matching
    the stored aggregates.
    """
    models = [(m.pk, m.name) for m in evaluation.ordered_models()]
    source = {
        "id": evaluation.pk, "round": None, "name": evaluation.name, "prompt_set": evaluation.prompt_set.name,
        "models": [name for _, name in models], "seed": evaluation.seed, "k": evaluation.k,
        "status": evaluation.status, "missing_prompts": len(evaluation.missing_prompts or []),
        "criteria": list(evaluation.criteria),
        "seed_policy": evaluation.seed_policy, "seed_policy_label": evaluation.get_seed_policy_display(),
    }
    return _rounds_data(evaluation=evaluation, source=source, models=models,
                        rounds=list(evaluation.annotation_rounds.order_by("id")))


def round_reportable(round_: Round) -> bool:
    """Whether a report can be built of the round alone: its kind contributes to reports."""
    return round_.kind in _ROUND_READERS


def round_data(*, round_: Round) -> EvaluationData:
    """A report's data from one annotation round (pairwise or alignment), made outside an evaluation.

    Its models are those of its images, in the order the items store them (a pairwise round's
    first image is Model A).
    """
    model_ids: list[int] = []
    for model_id in ItemImage.objects.filter(item__round=round_, item__is_gold=False).order_by(
        "order", "item_id"
    ).values_list("image__model_version_id", flat=True).distinct():
        if model_id not in model_ids:
            model_ids.append(model_id)
    names = dict(ModelVersion.objects.filter(pk__in=model_ids).values_list("pk", "name"))
    models = [(pk, names[pk]) for pk in model_ids]
    prompt_sets = sorted(set(Item.objects.filter(round=round_).values_list("prompt__prompt_set__name", flat=True)))
    source = {
        "id": None, "round": round_.pk, "name": round_.name, "prompt_set": ", ".join(prompt_sets) or "-",
        "models": [name for _, name in models], "seed": None, "k": round_.k, "status": round_.status,
        "missing_prompts": 0, "criteria": [round_.criterion or "text_alignment"],
    }
    return _rounds_data(evaluation=None, source=source, models=models, rounds=[round_])


def _rounds_data(*, evaluation, source: dict, models: list[tuple[int, str]], rounds: list[Round]) -> EvaluationData:
    collected = _Collected()
    annotators: dict[int, dict] = {}
    gold_totals: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    excluded_all: set[int] = set()
    judgments_total = judgments_synthetic = skips_total = 0

    for round_ in rounds:
        excluded = annotators_excluded(round_=round_)
        excluded_all |= excluded
        for annotator_id, (accuracy, n) in gold_accuracy(round_=round_).items():
            gold_totals[annotator_id][0] += accuracy * n
            gold_totals[annotator_id][1] += n
        judgments = (
            Judgment.objects.filter(round=round_, undone_at__isnull=True, item__is_gold=False)
            .exclude(annotator_id__in=excluded)
            .values("id", "item_id", "annotator_id", "annotator__username", "outcome", "winner_id",
                    "layout", "synthetic")
        )
        judgments = list(judgments)
        judgments_total += len(judgments)
        judgments_synthetic += sum(j["synthetic"] for j in judgments)
        for j in judgments:
            entry = annotators.setdefault(
                j["annotator_id"], {"username": j["annotator__username"], "synthetic": j["synthetic"], "judgments": 0}
            )
            entry["judgments"] += 1
        skips = (
            Lease.objects.filter(round=round_, state=Lease.State.SKIPPED, item__is_gold=False)
            .values("annotator_id", "annotator__username", "annotator__annotator_profile__synthetic")
            .annotate(n=Count("id")).order_by()
        )
        for row in skips:
            entry = annotators.setdefault(row["annotator_id"], {
                "username": row["annotator__username"],
                "synthetic": bool(row["annotator__annotator_profile__synthetic"]), "judgments": 0,
            })
            entry["skips"] = entry.get("skips", 0) + row["n"]
            skips_total += row["n"]
        items = Item.objects.filter(round=round_, is_gold=False).values_list("id", "prompt_id", "prompt__category")
        reader = _ROUND_READERS.get(round_.kind)
        if reader is not None:  # rounds of other kinds are no part of a report
            reader(collected, round_, items, judgments)

    return EvaluationData(
        evaluation=evaluation, source=source,
        rounds=[
            {"id": r.pk, "name": r.name, "kind": r.kind, "criterion": r.criterion or None, "k": r.k,
             **round_closing(round_=r).as_dict()}
            for r in rounds
        ],
        models=models, pairwise=collected.pairwise, alignment=collected.alignment,
        annotators=annotators,
        gold={a: (total / n, int(n)) for a, (total, n) in gold_totals.items() if n},
        judgments_total=judgments_total, judgments_synthetic=judgments_synthetic,
        excluded_annotators=excluded_all, skips_total=skips_total,
    )


@dataclass
class _Collected:
    """The per-kind parts of ``EvaluationData``, filled round by round."""

    pairwise: dict[str, list[PairwiseItem]] = field(default_factory=dict)
    alignment: list[AlignmentItem] | None = None


def _pairwise_read(collected: _Collected, round_: Round, items, judgments: list[dict]) -> None:
    collected.pairwise[round_.criterion] = _pairwise_items(round_, items, judgments)


def _alignment_read(collected: _Collected, round_: Round, items, judgments: list[dict]) -> None:
    collected.alignment = _alignment_items(round_, items)


# What each kind of round contributes to a report (evaluations create pairwise and alignment rounds).
_ROUND_READERS = {Round.Kind.PAIRWISE: _pairwise_read, Round.Kind.ALIGNMENT: _alignment_read}

# The pairwise votes (``Pairwise.vote``), as the report's vote tables name them.
_VOTE_LABELS = {voting.A: "A", voting.B: "B", voting.TIE: "tie", voting.REJECT: "reject"}


def _pairwise_items(round_: Round, items, judgments: list[dict]) -> list[PairwiseItem]:
    images: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)
    shown: dict[str, int] = {}  # the ids layouts hold (the item's own) -> image
    for item_id, order, image_id, model_id, public_id in ItemImage.objects.filter(item__round=round_).values_list(
        "item_id", "order", "image_id", "image__model_version_id", "public_id"
    ):
        images[item_id][order] = (image_id, model_id)
        shown[public_id] = image_id
    by_id: dict[int, PairwiseItem] = {}
    for item_id, prompt_id, category in items:
        (image_a, model_a), (image_b, model_b) = images[item_id][0], images[item_id][1]
        by_id[item_id] = PairwiseItem(
            item_id=item_id, prompt_id=prompt_id, category=category or UNCATEGORIZED,
            model_a=model_a, model_b=model_b, image_a=image_a, image_b=image_b,
        )
    for item_id, outcome, winner_id, no_majority, complete, n_judgments in Aggregate.objects.filter(
        round=round_, item_id__in=by_id
    ).values_list("item_id", "outcome", "winner_id", "no_majority", "complete", "n_judgments"):
        record = by_id[item_id]
        record.outcome, record.winner, record.no_majority, record.complete = outcome, winner_id, no_majority, complete
        record.short = complete and n_judgments < round_.k
    for j in judgments:
        record = by_id.get(j["item_id"])
        if record is None:
            continue
        vote = Pairwise.vote(outcome=j["outcome"], winner_id=j["winner_id"], image_a=record.image_a)
        if j["outcome"] == Judgment.Outcome.WIN:
            # Screen position: the layout is the item's image ids in the order this annotator saw them.
            if j["layout"] and shown.get(j["layout"][0]) == j["winner_id"]:
                record.left_wins += 1
            else:
                record.right_wins += 1
        record.votes.append((j["annotator_id"], _VOTE_LABELS[vote]))
    return list(by_id.values())


def _alignment_items(round_: Round, items) -> list[AlignmentItem]:
    models = dict(
        ItemImage.objects.filter(item__round=round_, order=0).values_list("item_id", "image__model_version_id")
    )
    by_id = {
        item_id: AlignmentItem(item_id=item_id, prompt_id=prompt_id, category=category or UNCATEGORIZED, model=models[item_id])
        for item_id, prompt_id, category in items
    }
    for item_id, complete, answers, n_judgments in Aggregate.objects.filter(round=round_, item_id__in=by_id).values_list(
        "item_id", "complete", "question_results", "n_judgments"
    ):
        by_id[item_id].complete, by_id[item_id].answers = complete, answers or {}
        by_id[item_id].short = complete and n_judgments < round_.k
    return list(by_id.values())
