"""Builders for evaluation tests: models, prompts with questions, images at the evaluation's seeds."""

from __future__ import annotations

import uuid

from annotation.services import assignment, submission
from annotation.models import Round
from catalog.generation import prompt_seed
from tests.factories import (
    AlignmentQuestionFactory,
    AnnotatorFactory,
    ImageFactory,
    ModelVersionFactory,
    PromptFactory,
    PromptSetFactory,
)


def prompt_set_with_images(
    *, models: list[str], n_prompts: int = 6, seed: int = 0, with_questions: int | None = None,
    categories=("Animals", "Vehicles"), skip: set[tuple[int, str]] = frozenset(), set_name: str = "parti-test",
):
    """A prompt set, model versions, and one image per prompt per model at ``prompt_seed(seed, ...)``.

    The first ``with_questions`` prompts (default: all) get two alignment questions, the second
    depending on the first. ``skip`` holds (prompt index, model name) pairs left without an image.
    """
    prompt_set = PromptSetFactory(name=set_name)
    versions = [ModelVersionFactory(name=name) for name in models]
    with_questions = n_prompts if with_questions is None else with_questions
    prompts = []
    for n in range(n_prompts):
        prompt = PromptFactory(prompt_set=prompt_set, external_id=f"{set_name}-{n}", category=categories[n % len(categories)])
        if n < with_questions:
            first = AlignmentQuestionFactory(prompt=prompt, order=1, text="Is there a bird?")
            second = AlignmentQuestionFactory(prompt=prompt, order=2, text="Is the bird blue?")
            second.parents.add(first)
        image_seed = prompt_seed(seed=seed, external_id=prompt.external_id)
        for m, version in enumerate(versions):
            if (n, version.name) not in skip:
                ImageFactory(prompt=prompt, model_version=version, seed=image_seed, color=(n * 20 % 255, m * 60, 90))
        prompts.append(prompt)
    return prompt_set, versions, prompts


def annotate_round(round_: Round, people, choose) -> int:
    """Every person judges every item they are given; ``choose(task, person)`` returns the answer.

    Goes through the annotation services (assignment, then submission), like the API does.
    Returns the number of judgments stored.
    """
    stored = 0
    for person in people:
        while True:
            task = assignment.item_next_for_annotator(round_=round_, annotator=person)
            if task is None:
                break
            submission.judgment_submit(
                annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(), answer=choose(task, person),
                elapsed_ms=1200,
            )
            stored += 1
    return stored


def annotators(n: int, **kwargs):
    return [AnnotatorFactory(**kwargs) for _ in range(n)]


def set_pairwise_outcomes(evaluation, criterion: str, labels: list[str], *, no_majority: int = 0) -> None:
    """Store complete majority results on a two-model evaluation's items, in prompt order.

    ``labels`` holds "A", "tie", "B" or "reject" (every vote was "cannot compare") per prompt;
    the first ``no_majority`` prompts are flagged as having had no majority.
    """
    from annotation.models import Aggregate

    from annotation.models import ItemImage

    round_ = evaluation.annotation_rounds.get(criterion=criterion)
    aggregates = list(Aggregate.objects.filter(round=round_).select_related("item").order_by("item__prompt_id"))
    assert len(aggregates) == len(labels), (len(aggregates), len(labels))
    images: dict[int, list[int]] = {}
    for item_id, image_id in ItemImage.objects.filter(item__round=round_).order_by("item_id", "order").values_list(
        "item_id", "image_id"
    ):
        images.setdefault(item_id, []).append(image_id)
    for index, (aggregate, label) in enumerate(zip(aggregates, labels)):
        a, b = images[aggregate.item_id]
        aggregate.complete, aggregate.n_judgments, aggregate.n_used = True, evaluation.k, evaluation.k
        aggregate.no_majority = index < no_majority
        if label in ("A", "B"):
            aggregate.outcome = Aggregate.Outcome.WINNER
            aggregate.winner_id, aggregate.loser_id = (a, b) if label == "A" else (b, a)
        else:
            aggregate.outcome = Aggregate.Outcome.TIE if label == "tie" else Aggregate.Outcome.PENDING
            aggregate.winner_id = aggregate.loser_id = None
    Aggregate.objects.bulk_update(
        aggregates, ["complete", "n_judgments", "n_used", "no_majority", "outcome", "winner", "loser"], batch_size=100
    )


def bulk_prompt_set(
    *, models: list[str], n_prompts: int, seed: int = 0, set_name: str = "bulk", categories=("Animals", "People"),
    with_questions: bool = False,
):
    """Many prompts and image rows at once (no files): for reports at the paper's scale.

    ``categories`` is a sequence cycled over the prompts, or a function of the prompt index;
    ``with_questions`` gives every prompt two alignment questions, the second depending on the first.
    """
    from catalog.models import AlignmentQuestion, Image, Prompt

    prompt_set = PromptSetFactory(name=set_name)
    versions = [ModelVersionFactory(name=name) for name in models]
    category = categories if callable(categories) else (lambda n: categories[n % len(categories)])
    Prompt.objects.bulk_create([
        Prompt(prompt_set=prompt_set, external_id=f"{set_name}-{n}", text=f"prompt {n}", category=category(n))
        for n in range(n_prompts)
    ])
    prompts = list(Prompt.objects.filter(prompt_set=prompt_set).order_by("id"))
    if with_questions:
        AlignmentQuestion.objects.bulk_create([
            AlignmentQuestion(prompt=p, order=order, text=text)
            for p in prompts for order, text in ((1, "Is there a bird?"), (2, "Is the bird blue?"))
        ])
        by_prompt: dict[int, dict[int, int]] = {}
        for pk, prompt_id, order in AlignmentQuestion.objects.filter(prompt__in=prompts).values_list("pk", "prompt_id", "order"):
            by_prompt.setdefault(prompt_id, {})[order] = pk
        AlignmentQuestion.parents.through.objects.bulk_create([
            AlignmentQuestion.parents.through(from_alignmentquestion_id=q[2], to_alignmentquestion_id=q[1])
            for q in by_prompt.values()
        ])
    Image.objects.bulk_create([
        Image(prompt=p, model_version=v, seed=prompt_seed(seed=seed, external_id=p.external_id),
              file=f"images/x/{p.pk}-{v.pk}.png", sha256="0" * 64, width=16, height=16)
        for p in prompts for v in versions
    ], batch_size=2000)
    return prompt_set, versions, prompts


def bulk_judgments(round_: Round, votes_by_item, people) -> int:
    """Judgment rows as submissions store them, in bulk; the aggregates are left to ``round_aggregate``.

    ``votes_by_item`` maps an item id to its votes, the n-th from ``people[n]``: "A", "B", "tie" or
    "reject" on pairwise items (A is the item's first image), a tuple of yes/no answers in question
    order on alignment items. Returns the number of judgments stored.
    """
    from django.utils import timezone

    from annotation.models import AlignmentAnswer, ItemImage, Judgment
    from catalog.models import AlignmentQuestion

    images: dict[int, list[tuple[int, str]]] = {}
    for item_id, image_id, public_id in ItemImage.objects.filter(item__round=round_).order_by("item_id", "order").values_list(
        "item_id", "image_id", "public_id"
    ):
        images.setdefault(item_id, []).append((image_id, public_id))
    questions: dict[int, list[int]] = {}
    if round_.kind == Round.Kind.ALIGNMENT:
        by_prompt: dict[int, list[int]] = {}
        prompt_of = dict(round_.items.values_list("pk", "prompt_id"))
        for prompt_id, question_id in AlignmentQuestion.objects.filter(prompt_id__in=set(prompt_of.values())).order_by(
            "order"
        ).values_list("prompt_id", "pk"):
            by_prompt.setdefault(prompt_id, []).append(question_id)
        questions = {item_id: by_prompt.get(prompt_id, []) for item_id, prompt_id in prompt_of.items()}
    now = timezone.now()
    judgments, answers = [], []
    for item_id, votes in votes_by_item.items():
        pair = images[item_id]
        for person, vote in zip(people, votes):
            judgment = Judgment(
                client_uuid=uuid.uuid4(), round=round_, item_id=item_id, annotator=person,
                layout=[public_id for _, public_id in pair], elapsed_ms=1000, created_at=now,
                outcome=Judgment.Outcome.ALIGNMENT,
            )
            if round_.kind == Round.Kind.PAIRWISE:
                (a, _), (b, _) = pair
                judgment.outcome = {"A": "win", "B": "win", "tie": "tie", "reject": "cannot_compare"}[vote]
                judgment.winner_id, judgment.loser_id = {"A": (a, b), "B": (b, a)}.get(vote, (None, None))
            else:
                answers.append((judgment, questions[item_id], vote))
            judgments.append(judgment)
    Judgment.objects.bulk_create(judgments, batch_size=2000)
    AlignmentAnswer.objects.bulk_create([
        AlignmentAnswer(judgment=judgment, question_id=q, answer=value)
        for judgment, question_ids, values in answers for q, value in zip(question_ids, values)
    ], batch_size=5000)
    return len(judgments)
