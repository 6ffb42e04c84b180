"""Builders for annotation tests: rounds of each kind with real image files, and valid answers."""

from __future__ import annotations

import uuid

from annotation.models import Item, ItemImage, Round
from annotation.services import assignment, rounds, submission
from tests.factories import AlignmentQuestionFactory, AnnotatorFactory, ImageFactory, ModelVersionFactory, PromptFactory


def pairwise_round(*, n_items=3, k=5, criterion="visual_flaws", name=None, **kwargs) -> Round:
    model_a = ModelVersionFactory(name="base-model-secret")
    model_b = ModelVersionFactory(name="pixel-dpo-secret")
    specs = []
    for n in range(n_items):
        prompt = PromptFactory()
        a = ImageFactory(prompt=prompt, model_version=model_a, seed=1000 + n, color=(n * 7 % 255, 10, 20))
        b = ImageFactory(prompt=prompt, model_version=model_b, seed=1000 + n, color=(n * 7 % 255, 200, 20))
        specs.append(rounds.ItemSpec(prompt_id=prompt.pk, image_ids=(a.pk, b.pk)))
    return rounds.round_create(
        name=name or f"pairwise-{Round.objects.count()}", kind="pairwise", criterion=criterion, k=k, items=specs, **kwargs
    )


def best_worst_round(*, n_items=2, n_images=5, k=5, **kwargs) -> Round:
    model = ModelVersionFactory(name="bw-model-secret")
    specs = []
    for n in range(n_items):
        prompt = PromptFactory()
        images = [ImageFactory(prompt=prompt, model_version=model, seed=s, color=(s * 40, n * 30, 90)) for s in range(n_images)]
        specs.append(rounds.ItemSpec(prompt_id=prompt.pk, image_ids=tuple(i.pk for i in images)))
    return rounds.round_create(name=f"bw-{Round.objects.count()}", kind="best_worst", k=k, items=specs, **kwargs)


def alignment_round(*, n_items=2, k=5, **kwargs) -> Round:
    model = ModelVersionFactory(name="align-model-secret")
    specs = []
    for n in range(n_items):
        prompt = PromptFactory(text=f"two blue birds number {n}")
        birds = AlignmentQuestionFactory(prompt=prompt, order=1, text="Are there birds?")
        blue = AlignmentQuestionFactory(prompt=prompt, order=2, text="Are the birds blue?")
        blue.parents.add(birds)
        image = ImageFactory(prompt=prompt, model_version=model, seed=n)
        specs.append(rounds.ItemSpec(prompt_id=prompt.pk, image_ids=(image.pk,)))
    return rounds.round_create(name=f"align-{Round.objects.count()}", kind="alignment", k=k, items=specs, **kwargs)


def shown_ids(item) -> list[str]:
    """The ids an item shows its images under (what annotators see and answer with), in canonical order."""
    return list(ItemImage.objects.filter(item=item).order_by("order").values_list("public_id", flat=True))


def catalog_ids(item) -> list[str]:
    """The catalog ids of an item's images (what gold answers and researchers use), in canonical order."""
    return list(ItemImage.objects.filter(item=item).order_by("order").values_list("image__public_id", flat=True))


def shown_id(judgment_or_item, image) -> str:
    """The id under which ``image`` was shown in the item (of a judgment, or an item)."""
    item_id = getattr(judgment_or_item, "item_id", None) or judgment_or_item.pk
    return ItemImage.objects.get(item_id=item_id, image=image).public_id


def annotators(n: int):
    return [AnnotatorFactory() for _ in range(n)]


def answer_for(lease, choice: str = "first"):
    """A valid answer for the lease's item: the image shown first wins / is best."""
    kind = lease.round.kind
    layout = lease.lease.layout
    if kind == "pairwise":
        if choice == "tie":
            return {"outcome": "tie"}
        return {"outcome": "win", "winner": layout[0] if choice == "first" else layout[1]}
    if kind == "best_worst":
        return {"best": layout[0], "worst": layout[-1]}
    questions = lease.item.questions()
    return {"answers": [{"question": q.pk, "answer": "yes"} for q in questions]}


def gold_round_with_a_failing_annotator(**kwargs):
    """A pairwise round (K=3) of a gold item and a regular one, both judged by three annotators.

    The first annotator fails the gold item and votes for the regular item's second image; the
    others pass it and vote for the first. Returns (round, regular item, annotators).
    """
    round_ = pairwise_round(n_items=2, k=3, gold_rate=1.0, **kwargs)
    gold, regular = Item.objects.filter(round=round_).order_by("id")
    rounds.item_gold_set(item=gold, is_gold=True, gold_answer={"outcome": "win", "winner": catalog_ids(gold)[0]})
    ga, gb = shown_ids(gold)
    ra, rb = shown_ids(regular)
    people = annotators(3)
    for n, person in enumerate(people):
        for winner in (gb if n == 0 else ga, rb if n == 0 else ra):  # gold rate 1.0: the gold item comes first
            task = assignment.item_next_for_annotator(round_=round_, annotator=person)
            submission.judgment_submit(annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(),
                                       answer={"outcome": "win", "winner": winner}, elapsed_ms=1)
    return round_, regular, people


OUTCOMES = {"A": "win", "B": "win", "tie": "tie", "reject": "cannot_compare"}


def judge(round_: Round, person, votes: list[str]) -> None:
    """``person`` judges the round's items in the order they are given (fullest first, then by id),
    voting ``votes[n]`` on the n-th; after the last vote they stop, holding the next item's lease."""
    for vote in votes:
        task = assignment.item_next_for_annotator(round_=round_, annotator=person)
        assert task is not None
        image_a, image_b = task.item.images()
        answer = {"outcome": OUTCOMES[vote]}
        if vote in ("A", "B"):
            answer["winner"] = (image_a if vote == "A" else image_b).public_id
        submission.judgment_submit(annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(),
                                   answer=answer, elapsed_ms=900)
    assignment.item_next_for_annotator(round_=round_, annotator=person)  # the declined item: leased, not judged


def by_column(votes_by_item: list[list[str]]) -> list[list[str]]:
    """Per annotator, their votes in item order, from per item, the votes in annotator order."""
    width = max(map(len, votes_by_item))
    columns = [[votes[n] for votes in votes_by_item if n < len(votes)] for n in range(width)]
    for n, column in enumerate(columns):  # an annotator who skips an item skips the ones after it too
        assert all(len(votes) > n for votes in votes_by_item[:len(column)])
    return columns


def annotate_votes(round_: Round, votes_by_item: list[list[str]]) -> list:
    """Pairwise votes ("A", "B", "tie", "reject") per item in id order, the n-th from the n-th of new
    annotators; an item with fewer votes than the one before it is where the later annotators stop.
    Returns the annotators."""
    people = annotators(max(map(len, votes_by_item)))
    for person, votes in zip(people, by_column(votes_by_item)):
        judge(round_, person, votes)
    return people
