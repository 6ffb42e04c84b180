"""Pairwise (A/B): which of two images is better on the round's criterion."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from annotation import sql, voting
from annotation.criteria import Criterion
from annotation.errors import InvalidAnswer
from annotation.kinds.base import ImageRow, ItemContext, ItemKind, ItemSpec, KindAggregate, ParsedAnswer
from annotation.models import Aggregate, Judgment, Round

CHOICES = ["left", "tie", "right"]


class Pairwise(ItemKind):
    value = Round.Kind.PAIRWISE
    page = ("annotate-pairwise", "annotation/pairwise.html")
    takes_criterion = True
    yields_pairs = True
    answer_format = "{outcome: win | tie | cannot_compare, winner}"

    def images_check(self, n_images: int) -> str | None:
        return None if n_images == 2 else f"a pairwise item needs 2 images, got {n_images}"

    def models_check(self, n_models: int) -> str | None:
        return None if n_models == 2 else "a pairwise round compares exactly two models"

    def items_build(self, *, rows: Sequence[ImageRow], model_ids: Sequence[int], n: int) -> list[ItemSpec]:
        """One item per (prompt, seed) that every model has an image for."""
        by_key: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        for image_id, prompt_id, seed, model_id in rows:
            by_key[(prompt_id, seed)].setdefault(model_id, image_id)
        return [
            ItemSpec(prompt_id=prompt_id, image_ids=tuple(per_model[m] for m in model_ids))
            for (prompt_id, _seed), per_model in sorted(by_key.items())
            if all(m in per_model for m in model_ids)
        ]

    def answer_parse(self, *, item: ItemContext, answer: dict, field: str) -> ParsedAnswer:
        outcome = answer.get("outcome")
        if outcome == Judgment.Outcome.WIN:
            winner = self.answer_image(item=item, answer=answer, key="winner", field=field)
            loser = next(image for image in item.images() if image.id != winner.id)
            return ParsedAnswer(outcome=outcome, winner_id=winner.id, loser_id=loser.id)
        if outcome == Judgment.Outcome.TIE:
            return ParsedAnswer(outcome=outcome)
        if outcome == Judgment.Outcome.CANNOT_COMPARE:
            if item.round.criterion != Criterion.VISUAL_APPEAL:
                raise InvalidAnswer("'cannot_compare' is offered for visual_appeal items only", field=field)
            return ParsedAnswer(outcome=outcome)
        raise InvalidAnswer("'outcome' must be 'win', 'tie' or 'cannot_compare'", field=field)

    def gold_score(self, *, parsed: ParsedAnswer, gold: ParsedAnswer) -> float:
        return float(parsed.outcome == gold.outcome and parsed.winner_id == gold.winner_id)

    @staticmethod
    def vote(*, outcome: str, winner_id: int | None, image_a: int) -> str:
        """A judgment as a majority vote relative to the item's first image: A, B, TIE or REJECT."""
        if outcome == Judgment.Outcome.WIN:
            return voting.A if winner_id == image_a else voting.B
        return voting.TIE if outcome == Judgment.Outcome.TIE else voting.REJECT

    def aggregate(self, *, item: ItemContext, votes: list[sql.VoteRow], k: int) -> KindAggregate:
        image_a, image_b = [image.id for image in item.images()]
        labels = [self.vote(outcome=v.outcome, winner_id=v.winner_id, image_a=image_a) for v in votes]
        result = voting.pairwise_majority(labels, k=k, no_majority_rule=item.round.no_majority_rule)
        aggregate = KindAggregate(
            outcome=Aggregate.Outcome.PENDING, counts=result.counts, no_majority=result.no_majority,
            used=[v for v, label in zip(votes, labels) if label != voting.REJECT],
            n_rejected=result.counts[voting.REJECT],
        )
        if result.outcome == voting.TIE:
            aggregate.outcome = Aggregate.Outcome.TIE
        elif result.outcome is not None:
            aggregate.outcome = Aggregate.Outcome.WINNER
            aggregate.winner_id, aggregate.loser_id = (
                (image_a, image_b) if result.outcome == voting.A else (image_b, image_a)
            )
            aggregate.margin = result.margin
        return aggregate

    def task_fields(self, *, item: ItemContext) -> dict:
        criterion = item.round.criterion
        choices = CHOICES + (["cannot_compare"] if criterion == Criterion.VISUAL_APPEAL else [])
        return {"prompt": None, "choices": choices, "questions": []}
