"""What every item kind provides, and the values the services hand to it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from django.core.exceptions import ValidationError

from annotation import sql
from annotation.errors import InvalidAnswer, InvalidRoundSpec
from annotation.models import Round
from catalog.models import AlignmentQuestion, Prompt


@dataclass(frozen=True)
class ItemSpec:
    """One item to create: its prompt and its images in canonical order."""

    prompt_id: int
    image_ids: tuple[int, ...]
    is_gold: bool = False
    gold_answer: dict | None = None


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer resolved to image ids, as it is stored on the judgment."""

    outcome: str
    winner_id: int | None = None
    loser_id: int | None = None
    answers: dict[int, bool] | None = None  # alignment: question id -> yes


@dataclass(eq=False)
class ItemContext:
    """One item as the services see it, with its images and questions read at most once."""

    id: int
    prompt_id: int
    round: Round | sql.RoundRow
    is_gold: bool = False
    gold_answer: dict | None = None
    # Which ids an answer names images by: "shown", the item's own (annotators), or "catalog" (gold answers,
    # which researchers write).
    answer_ids: str = "shown"
    _images: list[sql.ImageRef] | None = field(default=None, repr=False)
    _questions: list[AlignmentQuestion] | None = field(default=None, repr=False)

    @classmethod
    def of_row(cls, row: sql.ItemRow, round_) -> ItemContext:
        return cls(id=row.id, prompt_id=row.prompt_id, round=round_, is_gold=row.is_gold, gold_answer=row.gold_answer)

    def images(self) -> list[sql.ImageRef]:
        """The item's images in canonical order."""
        if self._images is None:
            self._images = sql.item_images(item_id=self.id)
        return self._images

    def prompt_text(self) -> str:
        return Prompt.objects.values_list("text", flat=True).get(pk=self.prompt_id)

    def questions(self) -> list[AlignmentQuestion]:
        """The prompt's alignment questions in order, with their parents."""
        if self._questions is None:
            self._questions = list(
                AlignmentQuestion.objects.filter(prompt_id=self.prompt_id).prefetch_related("parents").order_by("order")
            )
        return self._questions


@dataclass
class KindAggregate:
    """What a kind's majority rule decides for one item; the service adds the counts common to all kinds."""

    outcome: str
    counts: dict
    used: list[sql.VoteRow]  # the votes the rule counted (pairwise: rejections left out)
    winner_id: int | None = None
    loser_id: int | None = None
    margin: float | None = None
    no_majority: bool = False
    question_results: dict = field(default_factory=dict)
    alignment_score: float | None = None
    n_rejected: int = 0


# rows handed to ``items_build``: (image id, prompt id, seed, model version id), sorted by prompt, seed, id
ImageRow = tuple[int, int, int, int]


class ItemKind:
    """One kind of annotation item. Subclasses live one per module in this package."""

    value: ClassVar[str]  # Round.Kind value
    page: ClassVar[tuple[str, str]]  # (URL name, template) of the annotator's page
    takes_criterion: ClassVar[bool] = False
    yields_pairs: ClassVar[bool] = False  # the preference export reads winner/loser pairs from it
    answer_format: ClassVar[str]  # the submit format, for the API schema

    # --- round and item specs ---

    def round_check(self, *, criterion: str) -> None:
        """Refuse a criterion the kind does not take, or a missing one (the rule is the model's)."""
        try:
            Round(kind=self.value, criterion=criterion).clean()
        except ValidationError as exc:
            field, messages = next(iter(exc.message_dict.items()))
            raise InvalidRoundSpec(" ".join(messages), field=field) from exc

    def images_check(self, n_images: int) -> str | None:
        """Why an item of ``n_images`` images is refused, or None."""
        raise NotImplementedError

    def items_check(self, specs: Sequence[ItemSpec]) -> None:
        """Refuse the first item whose shape does not fit the kind (images exist and match: checked before)."""
        for index, spec in enumerate(specs):
            problem = self.images_check(len(spec.image_ids))
            if problem:
                raise InvalidRoundSpec(f"item {index}: {problem}", field="items")

    def models_check(self, n_models: int) -> str | None:
        """Why ``items_build`` cannot build items from the images of ``n_models`` models, or None."""
        return None

    def items_build(self, *, rows: Sequence[ImageRow], model_ids: Sequence[int], n: int) -> list[ItemSpec]:
        raise NotImplementedError

    # --- answers ---

    def answer_parse(self, *, item: ItemContext, answer: dict, field: str) -> ParsedAnswer:
        raise NotImplementedError

    @staticmethod
    def answer_image(*, item: ItemContext, answer: dict, key: str, field: str) -> sql.ImageRef:
        """The item's image named by ``answer[key]`` (an id of ``item.answer_ids``); anything else is refused."""
        value = answer.get(key)
        attribute = "catalog_id" if item.answer_ids == "catalog" else "public_id"
        image = next((i for i in item.images() if getattr(i, attribute) == value), None) if isinstance(value, str) \
            else None
        if image is None:
            raise InvalidAnswer(f"'{key}' must be one of this item's images", field=field)
        return image

    def gold_score(self, *, parsed: ParsedAnswer, gold: ParsedAnswer) -> float:
        """Agreement of an answer with the gold answer, 0..1."""
        raise NotImplementedError

    # --- aggregation and tasks ---

    def aggregate(self, *, item: ItemContext, votes: list[sql.VoteRow], k: int) -> KindAggregate:
        """The majority result of the item's counted votes, counted against ``k`` (the round's K, or
        ``voting.closing_k`` when a round closed early decides an item short of K)."""
        raise NotImplementedError

    def task_fields(self, *, item: ItemContext) -> dict:
        """The kind's part of an annotator's task: ``prompt``, ``choices``, ``questions``."""
        raise NotImplementedError
