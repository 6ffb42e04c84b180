"""Item kinds as a registry: one class per kind, in one module each.

A kind validates a round's and an item's spec, builds items from images (``create_round``),
parses an answer, scores it against a gold answer, aggregates votes (through the vote rules of
``annotation.voting``) and builds its part of the annotator's task. Adding a kind: a
``Round.Kind`` value, one module here registered in ``KINDS``, and its page template (and JS
page module).
"""

from __future__ import annotations

from annotation.kinds.alignment import Alignment
from annotation.kinds.base import ItemContext, ItemKind, ItemSpec, KindAggregate, ParsedAnswer
from annotation.kinds.best_worst import BestWorst
from annotation.kinds.pairwise import Pairwise

KINDS: dict[str, ItemKind] = {kind.value: kind for kind in (Pairwise(), BestWorst(), Alignment())}

__all__ = ["KINDS", "ItemContext", "ItemKind", "ItemSpec", "KindAggregate", "ParsedAnswer", "item_kind", "kinds_with_pairs"]


def item_kind(value: str) -> ItemKind:
    """The kind registered under a ``Round.Kind`` value."""
    return KINDS[value]


def kinds_with_pairs() -> list[str]:
    """The kinds whose aggregates are winner/loser pairs (the preference export, training rounds)."""
    return [value for value, kind in KINDS.items() if kind.yields_pairs]
