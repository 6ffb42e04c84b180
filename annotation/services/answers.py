"""Checking an answer (submit format) against its item, through the item's kind.

Annotators name images by the ids the item shows them under; gold answers, which researchers write,
by the images' catalog ids.
"""

from __future__ import annotations

from dataclasses import replace

from annotation.errors import InvalidAnswer
from annotation.kinds import ItemContext, ParsedAnswer, item_kind


def answer_parse(*, item: ItemContext, answer, field: str = "answer", ids: str = "shown") -> ParsedAnswer:
    """Check an answer against its item and resolve the image ids (``ids``: "shown" or "catalog")."""
    if not isinstance(answer, dict):
        raise InvalidAnswer("must be a JSON object", field=field)
    if item.answer_ids != ids:
        item = replace(item, answer_ids=ids)
    return item_kind(item.round.kind).answer_parse(item=item, answer=answer, field=field)


def gold_score(*, item: ItemContext, parsed: ParsedAnswer) -> float | None:
    """Agreement of a parsed answer with the item's gold answer, 0..1; None for an item that is not gold."""
    if not item.is_gold or item.gold_answer is None:
        return None
    gold = answer_parse(item=item, answer=item.gold_answer, field="gold_answer", ids="catalog")
    return item_kind(item.round.kind).gold_score(parsed=parsed, gold=gold)
