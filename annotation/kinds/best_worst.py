"""Best/worst of N: the annotator marks the best and the worst of three or more images of one prompt."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from annotation import sql, voting
from annotation.errors import InvalidAnswer, InvalidRoundSpec
from annotation.kinds.base import ImageRow, ItemContext, ItemKind, ItemSpec, KindAggregate, ParsedAnswer
from annotation.models import Aggregate, Judgment, Round

MIN_IMAGES = 3


class BestWorst(ItemKind):
    value = Round.Kind.BEST_WORST
    page = ("annotate-best-worst", "annotation/best_worst.html")
    yields_pairs = True
    answer_format = "{best, worst}"

    def images_check(self, n_images: int) -> str | None:
        if n_images >= MIN_IMAGES:
            return None
        return f"a best/worst item needs at least {MIN_IMAGES} images, got {n_images}"

    def models_check(self, n_models: int) -> str | None:
        return None if n_models == 1 else "a best_worst round takes the images of one model"

    def items_build(self, *, rows: Sequence[ImageRow], model_ids: Sequence[int], n: int) -> list[ItemSpec]:
        """Items of ``n`` images of one prompt, in seed order; the remainder of each prompt is left out."""
        problem = self.images_check(n)
        if problem:
            raise InvalidRoundSpec(problem, field="n")
        by_prompt: dict[int, list[int]] = defaultdict(list)
        for image_id, prompt_id, _seed, _model in rows:
            by_prompt[prompt_id].append(image_id)
        return [
            ItemSpec(prompt_id=prompt_id, image_ids=tuple(image_ids[start:start + n]))
            for prompt_id, image_ids in sorted(by_prompt.items())
            for start in range(0, len(image_ids) - n + 1, n)
        ]

    def answer_parse(self, *, item: ItemContext, answer: dict, field: str) -> ParsedAnswer:
        picked = {key: self.answer_image(item=item, answer=answer, key=key, field=field) for key in ("best", "worst")}
        if picked["best"].id == picked["worst"].id:
            raise InvalidAnswer("'best' and 'worst' must be different images", field=field)
        return ParsedAnswer(outcome=Judgment.Outcome.BEST_WORST, winner_id=picked["best"].id,
                            loser_id=picked["worst"].id)

    def gold_score(self, *, parsed: ParsedAnswer, gold: ParsedAnswer) -> float:
        return ((parsed.winner_id == gold.winner_id) + (parsed.loser_id == gold.loser_id)) / 2

    def aggregate(self, *, item: ItemContext, votes: list[sql.VoteRow], k: int) -> KindAggregate:
        images = item.images()
        result = voting.best_worst_majority([(v.winner_id, v.loser_id) for v in votes], images=[i.id for i in images])
        public = {image.id: image.catalog_id for image in images}  # researchers read counts
        aggregate = KindAggregate(
            outcome=Aggregate.Outcome.PENDING, used=votes,
            counts={
                "best": {public[i]: n for i, n in result.best_counts.items()},
                "worst": {public[i]: n for i, n in result.worst_counts.items()},
            },
        )
        if votes and result.ambiguous:
            aggregate.outcome = Aggregate.Outcome.AMBIGUOUS
        elif votes:
            aggregate.outcome = Aggregate.Outcome.WINNER
            aggregate.winner_id, aggregate.loser_id, aggregate.margin = result.winner, result.loser, result.margin
        return aggregate

    def task_fields(self, *, item: ItemContext) -> dict:
        return {"prompt": item.prompt_text(), "choices": ["best", "worst"], "questions": []}

