"""Creating rounds and their items; gold items; changing a round's settings."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, transaction
from django.utils import timezone

from annotation import selectors, voting
from annotation.errors import Conflict, InvalidInput, InvalidRoundSpec
from annotation.kinds import ItemContext, ItemSpec, item_kind
from annotation.models import Aggregate, Item, ItemImage, Round
from annotation.services.aggregation import round_aggregate
from annotation.services.answers import answer_parse
from catalog.models import Image

__all__ = ["ItemSpec", "item_gold_set", "round_close", "round_create", "round_update"]


def _items_check(*, kind: str, items: list[ItemSpec]) -> None:
    """Every image exists, appears once in its item and belongs to the item's prompt; then the kind's own rules."""
    image_ids = sorted({i for spec in items for i in spec.image_ids})
    prompts: dict[int, int] = {}
    for start in range(0, len(image_ids), 10000):
        prompts.update(Image.objects.filter(pk__in=image_ids[start:start + 10000]).values_list("id", "prompt_id"))
    for index, spec in enumerate(items):
        if len(set(spec.image_ids)) != len(spec.image_ids):
            raise InvalidRoundSpec(f"item {index}: an image appears twice", field="items")
        for image_id in spec.image_ids:
            if image_id not in prompts:
                raise InvalidRoundSpec(f"item {index}: image {image_id} does not exist", field="items")
            if prompts[image_id] != spec.prompt_id:
                raise InvalidRoundSpec(f"item {index}: image {image_id} belongs to another prompt", field="items")
    item_kind(kind).items_check(items)


def _full_clean(round_: Round) -> None:
    try:
        round_.full_clean()
    except DjangoValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidRoundSpec(f"{field}: {' '.join(messages)}", field=field) from exc


@transaction.atomic
def round_create(
    *, name: str, kind: str, items: list[ItemSpec], criterion: str = "", k: int = 5, lease_ttl_seconds: int = 600,
    no_majority_rule: str = "tie", gold_rate: float = 0.0, gold_min_accuracy: float | None = None,
    status: str = "open", created_by=None, batch_size: int = 2000,
) -> Round:
    """Create a round and its items (all or nothing); every item gets an empty aggregate."""
    round_ = Round(
        name=name, kind=kind, criterion=criterion or "", k=k, lease_ttl_seconds=lease_ttl_seconds,
        no_majority_rule=no_majority_rule, gold_rate=gold_rate, gold_min_accuracy=gold_min_accuracy,
        status=status, created_by=created_by,
    )
    _full_clean(round_)
    _items_check(kind=kind, items=items)
    round_.save()
    for start in range(0, len(items), batch_size):
        specs = items[start:start + batch_size]
        created = Item.objects.bulk_create(
            # Not gold yet: ``item_gold_set`` checks the gold answer against the item's images, then marks it.
            [Item(round=round_, prompt_id=s.prompt_id, k=round_.k) for s in specs]
        )
        ItemImage.objects.bulk_create(
            [
                ItemImage(item=item, image_id=image_id, order=order)
                for item, spec in zip(created, specs)
                for order, image_id in enumerate(spec.image_ids)
            ]
        )
        Aggregate.objects.bulk_create([Aggregate(item=item, round=round_) for item in created])
        for item, spec in zip(created, specs):
            if spec.is_gold:
                item.round = round_
                item_gold_set(item=item, is_gold=True, gold_answer=spec.gold_answer)
    if connection.vendor == "postgresql" and len(items) >= 1000:
        # A bulk load can double these tables; without fresh statistics the planner may pick
        # sequential scans for every assignment until autovacuum gets round to them.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE annotation_item, annotation_itemimage, annotation_aggregate")
    return round_


# Settings whose change alters which judgments count, so every aggregate of the round is recomputed.
_AGGREGATION_SETTINGS = ("gold_min_accuracy", "no_majority_rule")


@transaction.atomic
def round_update(*, round_: Round, **changes) -> Round:
    """Change a round's settings (not its kind, K or items); re-aggregate when a change alters the counting."""
    fixed = sorted({"kind", "k", "items"} & changes.keys())
    if fixed:
        raise InvalidRoundSpec(f"{fixed[0]} is fixed once the round exists", field=fixed[0])
    changes.pop("close_rule", None), changes.pop("closed_at", None)  # set by ``round_close`` only
    recount = any(name in changes and changes[name] != getattr(round_, name) for name in _AGGREGATION_SETTINGS)
    status = changes.get("status", round_.status)
    if status != round_.status:
        if status == Round.Status.CLOSED:  # closed by hand: items short of K stay out, as before
            changes.update(close_rule=Round.CloseRule.DROP_PARTIAL, closed_at=timezone.now())
        elif round_.status == Round.Status.CLOSED:  # reopened: items short of K are open again
            recount = recount or round_.close_rule == Round.CloseRule.COUNT_PARTIAL
            changes.update(close_rule="", closed_at=None)
    for name, value in changes.items():
        setattr(round_, name, value)
    _full_clean(round_)
    round_.save(update_fields=list(changes) or None)
    if recount:
        round_aggregate(round_=round_)
    return round_


@transaction.atomic
def round_close(*, round_: Round, rule: str) -> selectors.RoundClosing:
    """Close a round before every item has K judgments, and count its items under ``rule``.

    ``count-partial``: an item short of K is decided by the votes it has when it has enough
    (``voting.closing_k``: at least ⌈K/2⌉ + 1), else it stays undecided; ``drop-partial``: items
    short of K stay out, as in an open round. The round takes no more submissions or undos.
    """
    if rule not in voting.CLOSE_RULES:
        raise InvalidInput(f"must be one of {', '.join(voting.CLOSE_RULES)}, not {rule!r}", field="rule")
    # FOR UPDATE: waits for submissions in flight (they hold a key-share lock on the round), and they for it.
    round_ = Round.objects.select_for_update().get(pk=round_.pk)
    if round_.status == Round.Status.CLOSED:
        closed = f" under {round_.close_rule}" if round_.close_rule else ""
        raise Conflict(f"round {round_.pk} is already closed{closed}", code="round_already_closed")
    round_.status, round_.close_rule, round_.closed_at = Round.Status.CLOSED, rule, timezone.now()
    round_.save(update_fields=["status", "close_rule", "closed_at"])
    if rule == Round.CloseRule.COUNT_PARTIAL:
        round_aggregate(round_=round_)
    return selectors.round_closing(round_=round_)


def item_gold_set(*, item: Item, is_gold: bool, gold_answer: dict | None = None) -> Item:
    """Mark an item as gold with its known answer (validated like a submission), or unmark it."""
    if is_gold:
        if gold_answer is None:
            raise InvalidRoundSpec("a gold item needs a gold_answer", field="gold_answer")
        answer_parse(item=ItemContext(id=item.pk, prompt_id=item.prompt_id, round=item.round), answer=gold_answer,
                     field="gold_answer", ids="catalog")
    elif item.is_gold and item.slots_taken > item.k:
        raise InvalidRoundSpec(
            f"item {item.pk} has {item.slots_taken} judgments and leases, more than K={item.k}: it stays gold",
            field="is_gold",
        )
    item.is_gold = is_gold
    item.gold_answer = gold_answer if is_gold else None
    item.save(update_fields=["is_gold", "gold_answer"])
    return item
