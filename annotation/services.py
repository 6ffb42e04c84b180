"""Write-side operations of the annotation app."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Avg, Count, F, Sum
from django.utils import timezone

from annotation import voting
from annotation.conf import setting
from annotation.models import Aggregate, AlignmentAnswer, AnnotatorProfile, Item, ItemImage, Judgment, Lease, Round
from catalog.models import AlignmentQuestion, Image

# --- Annotation rounds: creation, assignment, submission, undo, aggregation -------------


class AnnotationError(Exception):
    """A refused annotation request; ``code`` and ``status`` are what the API answers."""

    code = "error"
    status = 400

    def __init__(self, detail: str, *, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code


class NotFound(AnnotationError):
    code, status = "not_found", 404


class Conflict(AnnotationError):
    code, status = "conflict", 409


class InvalidAnswer(AnnotationError):
    code, status = "invalid", 400

    def __init__(self, detail: str, *, field: str = "answer"):
        super().__init__(detail)
        self.field = field


class Throttled(AnnotationError):
    code, status = "throttled", 429

    def __init__(self, detail: str, *, retry_after: float):
        super().__init__(detail)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ItemSpec:
    """One item to create: its prompt and its images in canonical order."""

    prompt_id: int
    image_ids: tuple[int, ...]
    is_gold: bool = False
    gold_answer: dict | None = None


def _item_spec_check(*, kind: str, spec: ItemSpec, images: dict[int, Image], prompts_with_questions: set[int], index: int):
    where = f"item {index}"
    if len(set(spec.image_ids)) != len(spec.image_ids):
        raise InvalidAnswer(f"{where}: an image appears twice", field="items")
    expected = {Round.Kind.PAIRWISE: "2", Round.Kind.ALIGNMENT: "1"}.get(kind)
    if kind == Round.Kind.PAIRWISE and len(spec.image_ids) != 2:
        raise InvalidAnswer(f"{where}: a pairwise item needs {expected} images, got {len(spec.image_ids)}", field="items")
    if kind == Round.Kind.ALIGNMENT and len(spec.image_ids) != 1:
        raise InvalidAnswer(f"{where}: an alignment item needs 1 image, got {len(spec.image_ids)}", field="items")
    if kind == Round.Kind.BEST_WORST and len(spec.image_ids) < 3:
        raise InvalidAnswer(f"{where}: a best/worst item needs at least 3 images, got {len(spec.image_ids)}", field="items")
    for image_id in spec.image_ids:
        image = images.get(image_id)
        if image is None:
            raise InvalidAnswer(f"{where}: image {image_id} does not exist", field="items")
        if image.prompt_id != spec.prompt_id:
            raise InvalidAnswer(f"{where}: image {image_id} belongs to another prompt", field="items")
    if kind == Round.Kind.ALIGNMENT and spec.prompt_id not in prompts_with_questions:
        raise InvalidAnswer(f"{where}: prompt {spec.prompt_id} has no alignment questions", field="items")


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
    try:
        round_.full_clean()
    except DjangoValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidAnswer(f"{field}: {' '.join(messages)}", field=field) from exc
    round_.save()
    image_ids = {i for spec in items for i in spec.image_ids}
    images = {}
    for chunk in _chunks(sorted(image_ids), 10000):
        images.update(Image.objects.only("id", "prompt_id").in_bulk(chunk))
    prompts_with_questions: set[int] = set()
    if kind == Round.Kind.ALIGNMENT:
        prompts_with_questions = set(
            AlignmentQuestion.objects.filter(prompt_id__in={s.prompt_id for s in items}).values_list("prompt_id", flat=True)
        )
    for index, spec in enumerate(items):
        _item_spec_check(kind=kind, spec=spec, images=images, prompts_with_questions=prompts_with_questions, index=index)
    for start in range(0, len(items), batch_size):
        specs = items[start:start + batch_size]
        created = Item.objects.bulk_create(
            [Item(round=round_, prompt_id=s.prompt_id, is_gold=s.is_gold, k=round_.k) for s in specs]
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
                item_gold_set(item=item, is_gold=True, gold_answer=spec.gold_answer)
    if connection.vendor == "postgresql" and len(items) >= 1000:
        # A bulk load can double these tables; without fresh statistics the planner may pick
        # sequential scans for every assignment until autovacuum gets round to them.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE annotation_item, annotation_itemimage, annotation_aggregate")
    return round_


def _chunks(values: list, size: int):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def item_gold_set(*, item: Item, is_gold: bool, gold_answer: dict | None = None) -> Item:
    """Mark an item as gold with its known answer (validated like a submission), or unmark it."""
    if is_gold:
        if gold_answer is None:
            raise InvalidAnswer("a gold item needs a gold_answer", field="gold_answer")
        answer_parse(item=item, answer=gold_answer, field="gold_answer")
    elif item.is_gold and item.slots_taken > item.k:
        raise InvalidAnswer(
            f"item {item.pk} has {item.slots_taken} judgments and leases, more than K={item.k}: it stays gold",
            field="is_gold",
        )
    item.is_gold = is_gold
    item.gold_answer = gold_answer if is_gold else None
    item.save(update_fields=["is_gold", "gold_answer"])
    return item


# --- answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedAnswer:
    outcome: str
    winner_id: int | None = None
    loser_id: int | None = None
    answers: dict[int, bool] | None = None  # alignment: question id -> yes


class ItemImageRef(NamedTuple):
    """What assignment, validation and aggregation need of an item's image (no file, model or seed)."""

    pk: int
    public_id: str
    width: int
    height: int


def _item_images(item: Item) -> list[ItemImageRef]:
    """The item's images in canonical order, read once per item object."""
    cached = getattr(item, "_ordered_images", None)
    if cached is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT ii.image_id, im.public_id, im.width, im.height FROM annotation_itemimage ii"
                " JOIN catalog_image im ON im.id = ii.image_id WHERE ii.item_id = %s ORDER BY ii.\"order\"",
                [item.pk],
            )
            cached = [ItemImageRef(*row) for row in cursor.fetchall()]
        item._ordered_images = cached
    return cached


def _item_questions(item: Item) -> list[AlignmentQuestion]:
    cached = getattr(item, "_questions", None)
    if cached is None:
        cached = list(AlignmentQuestion.objects.filter(prompt_id=item.prompt_id).prefetch_related("parents").order_by("order"))
        item._questions = cached
    return cached


def answer_parse(*, item: Item, answer, field: str = "answer") -> ParsedAnswer:
    """Check an answer (submit format, image public ids) against its item and resolve the ids."""
    if not isinstance(answer, dict):
        raise InvalidAnswer("must be a JSON object", field=field)
    kind = item.round.kind
    if kind in (Round.Kind.PAIRWISE, Round.Kind.BEST_WORST):
        by_public_id = {image.public_id: image for image in _item_images(item)}

        def image_of(key: str) -> ItemImageRef:
            value = answer.get(key)
            if value not in by_public_id:
                raise InvalidAnswer(f"'{key}' must be one of this item's images", field=field)
            return by_public_id[value]

    if kind == Round.Kind.PAIRWISE:
        outcome = answer.get("outcome")
        if outcome == Judgment.Outcome.WIN:
            winner = image_of("winner")
            loser = next(image for image in by_public_id.values() if image.pk != winner.pk)
            return ParsedAnswer(outcome=outcome, winner_id=winner.pk, loser_id=loser.pk)
        if outcome == Judgment.Outcome.TIE:
            return ParsedAnswer(outcome=outcome)
        if outcome == Judgment.Outcome.CANNOT_COMPARE:
            if item.round.criterion != Round.Criterion.VISUAL_APPEAL:
                raise InvalidAnswer("'cannot_compare' is offered for visual_appeal items only", field=field)
            return ParsedAnswer(outcome=outcome)
        raise InvalidAnswer("'outcome' must be 'win', 'tie' or 'cannot_compare'", field=field)
    if kind == Round.Kind.BEST_WORST:
        best, worst = image_of("best"), image_of("worst")
        if best.pk == worst.pk:
            raise InvalidAnswer("'best' and 'worst' must be different images", field=field)
        return ParsedAnswer(outcome=Judgment.Outcome.BEST_WORST, winner_id=best.pk, loser_id=worst.pk)
    # alignment
    entries = answer.get("answers")
    if not isinstance(entries, list):
        raise InvalidAnswer("'answers' must be a list of {question, answer}", field=field)
    question_ids = {q.pk for q in _item_questions(item)}
    parsed: dict[int, bool] = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("question") not in question_ids:
            raise InvalidAnswer(f"answers[{n}]: 'question' must be one of this item's questions", field=field)
        if entry.get("answer") not in ("yes", "no"):
            raise InvalidAnswer(f"answers[{n}]: 'answer' must be 'yes' or 'no'", field=field)
        if entry["question"] in parsed:
            raise InvalidAnswer(f"answers[{n}]: question {entry['question']} is answered twice", field=field)
        parsed[entry["question"]] = entry["answer"] == "yes"
    missing = sorted(question_ids - parsed.keys())
    if missing:
        raise InvalidAnswer(f"questions {missing} have no answer", field=field)
    return ParsedAnswer(outcome=Judgment.Outcome.ALIGNMENT, answers=parsed)


def _gold_score(*, parsed: ParsedAnswer, gold: ParsedAnswer) -> float:
    if parsed.outcome == Judgment.Outcome.ALIGNMENT:
        agree = sum(parsed.answers[q] == gold.answers.get(q) for q in parsed.answers)
        return agree / len(parsed.answers) if parsed.answers else 1.0
    if parsed.outcome == Judgment.Outcome.BEST_WORST:
        return ((parsed.winner_id == gold.winner_id) + (parsed.loser_id == gold.loser_id)) / 2
    return float(parsed.outcome == gold.outcome and parsed.winner_id == gold.winner_id)


# --- the hot path in SQL ----------------------------------------------------------------
# Assignment and submission run on every judgment. They are written as a few hand-written
# statements (portable between PostgreSQL and SQLite) rather than ORM queries: building the
# ORM queries cost about as much CPU as the rest of the request together.


def _lock(*, skip_locked: bool = False, of: str = "") -> str:
    """Row-lock clause on PostgreSQL; empty on SQLite, which serializes writers anyway."""
    if not connection.features.has_select_for_update:
        return ""
    return " FOR NO KEY UPDATE" + (f" OF {of}" if of else "") + (" SKIP LOCKED" if skip_locked else "")


def _uuid_param(value) -> uuid.UUID | str:
    value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    return value if connection.features.has_native_uuid_field else value.hex


def _uuid_from_db(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _datetime_param(value: datetime | None):
    return connection.ops.adapt_datetimefield_value(value)


def _datetime_from_db(value) -> datetime | None:
    if value is None or (isinstance(value, datetime) and timezone.is_aware(value)):
        return value
    return connection.ops.convert_datetimefield_value(value, None, connection)  # SQLite: naive UTC


def _json_param(value):
    return connection.ops.adapt_json_value(value, None)


def _round_from_row(row) -> Round:
    """A Round from the columns selected as ``_ROUND_COLUMNS``."""
    round_ = Round(
        id=row[0], kind=row[1], criterion=row[2], k=row[3], status=row[4], lease_ttl_seconds=row[5],
        gold_rate=row[6], no_majority_rule=row[7], gold_min_accuracy=row[8],
    )
    round_._state.adding, round_._state.db = False, connection.alias
    return round_


_ROUND_COLUMNS = (
    "r.id, r.kind, r.criterion, r.k, r.status, r.lease_ttl_seconds, r.gold_rate, r.no_majority_rule, r.gold_min_accuracy"
)


def _saved(instance):
    """Mark an instance built from a row as loaded from the database."""
    instance._state.adding, instance._state.db = False, connection.alias
    return instance


# --- assignment -----------------------------------------------------------------------


def _profile_from_row(annotator, row) -> AnnotatorProfile:
    profile_id, synthetic, tokens, tokens_at = row
    return _saved(AnnotatorProfile(
        id=profile_id, user=annotator, synthetic=bool(synthetic), submit_tokens=tokens,
        submit_tokens_at=_datetime_from_db(tokens_at),
    ))


def _profile_lock(annotator) -> AnnotatorProfile:
    """Lock the annotator's profile row: one assignment or submission per annotator at a time."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, synthetic, submit_tokens, submit_tokens_at FROM annotation_annotatorprofile"
            " WHERE user_id = %s" + _lock(),
            [annotator.pk],
        )
        row = cursor.fetchone()
    if row is None:
        AnnotatorProfile.objects.get_or_create(user=annotator)
        return _profile_lock(annotator)
    return _profile_from_row(annotator, row)


def leases_reclaim(*, round_: Round, now: datetime | None = None, limit: int = 500) -> int:
    """Turn a round's expired held leases back into free slots; returns how many were reclaimed.

    Rows another transaction holds are skipped, not waited for, so this never deadlocks
    with assignment or submission; a later call picks them up.
    """
    with transaction.atomic():
        return _leases_reclaim(round_=round_, now=now or timezone.now(), limit=limit)


def _leases_reclaim(*, round_: Round, now: datetime, limit: int) -> int:
    expired = list(
        Lease.objects.filter(round=round_, state=Lease.State.HELD, expires_at__lte=now)
        .select_for_update(no_key=True, skip_locked=True).values_list("id", "item_id")[:limit]
    )
    if not expired:
        return 0
    locked_items = set(
        Item.objects.filter(pk__in={item_id for _, item_id in expired})
        .select_for_update(no_key=True, skip_locked=True).values_list("pk", flat=True)
    )
    reclaimable = [(lease_id, item_id) for lease_id, item_id in expired if item_id in locked_items]
    Lease.objects.filter(pk__in=[lease_id for lease_id, _ in reclaimable], state=Lease.State.HELD).update(
        state=Lease.State.EXPIRED
    )
    for item_id, n in Counter(item_id for _, item_id in reclaimable).items():
        Item.objects.filter(pk=item_id).update(slots_taken=F("slots_taken") - n)
    return len(reclaimable)


_reclaimed_at: dict[int, float] = {}


def _reclaim_due(round_id: int) -> bool:
    """Reclaim a round's expired leases at most every ANNOTATION_RECLAIM_INTERVAL seconds per process.

    Until reclaimed, an expired lease still counts against K, so a later reclaim only delays
    reuse of a slot; it never lets an item exceed K.
    """
    now = time.monotonic()
    if now - _reclaimed_at.get(round_id, float("-inf")) < setting("ANNOTATION_RECLAIM_INTERVAL"):
        return False
    _reclaimed_at[round_id] = now
    return True


def _lease_release(cursor, lease: Lease) -> None:
    """Give a held lease's slot back (the caller holds the annotator's profile lock)."""
    cursor.execute(
        "UPDATE annotation_lease SET state = %s WHERE id = %s AND state = %s",
        [Lease.State.EXPIRED, _uuid_param(lease.pk), Lease.State.HELD],
    )
    if cursor.rowcount:
        cursor.execute("UPDATE annotation_item SET slots_taken = slots_taken - 1 WHERE id = %s", [lease.item_id])


def _item_pick(cursor, *, round_: Round, annotator, gold: bool, skip_items: set[int]) -> Item | None:
    """Take a slot of the fullest item that has one free and that this annotator does not hold or judged.

    One statement: the scan locks its pick (``SKIP LOCKED``: items other annotators are
    taking are passed over, not waited for) and the UPDATE takes the slot, guarded by
    ``slots_taken < K`` (gold items are outside K).
    """
    params: list = [round_.pk, gold, annotator.pk, Lease.State.HELD, Lease.State.SUBMITTED]
    where = ""
    if skip_items:
        where += f" AND i.id NOT IN ({', '.join(['%s'] * len(skip_items))})"
        params += sorted(skip_items)
    if gold:
        order, guard = "i.id", ""
    else:
        where += " AND i.slots_taken < %s"
        params.append(round_.k)
        order, guard = "i.slots_taken DESC, i.id", " AND slots_taken < %s"
    cursor.execute(
        "UPDATE annotation_item SET slots_taken = slots_taken + 1 WHERE id = ("
        " SELECT i.id FROM annotation_item i WHERE i.round_id = %s AND i.is_gold = %s"
        " AND NOT EXISTS (SELECT 1 FROM annotation_lease l WHERE l.item_id = i.id AND l.annotator_id = %s"
        " AND l.state IN (%s, %s))" + where + f" ORDER BY {order} LIMIT 1" + _lock(skip_locked=True) + ")"
        + guard + " RETURNING id, prompt_id",
        params + ([round_.k] if guard else []),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return _saved(Item(id=row[0], round=round_, prompt_id=row[1], is_gold=gold))


def item_next_for_annotator(
    *, round_: Round, annotator, exclude: list | tuple = (), now: datetime | None = None,
    rng: random.Random | None = None,
) -> Lease | None:
    """Lease the annotator's next item of the round, or return their current lease, or None.

    Breadth-first: the item with the most judgments and held leases (below K) comes first.
    A slot is taken by a conditional UPDATE (``slots_taken < K``) under the item's row lock
    (``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serializes writers), so no item
    is ever leased beyond K, whatever the interleaving.
    """
    now = now or timezone.now()
    if round_.status != Round.Status.OPEN:
        raise NotFound(f"round {round_.pk} is not open")
    with transaction.atomic():
        _profile_lock(annotator)
        return _item_next(round_=round_, annotator=annotator, exclude=exclude, now=now, rng=rng or _system_random)


def _item_next(*, round_: Round, annotator, exclude, now: datetime, rng: random.Random) -> Lease | None:
    """The body of ``item_next_for_annotator``; the caller holds the annotator's profile lock."""
    exclude = {str(lease_id) for lease_id in exclude}
    if _reclaim_due(round_.pk):
        _leases_reclaim(round_=round_, now=now, limit=100)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, item_id, layout, leased_at, expires_at FROM annotation_lease"
            " WHERE round_id = %s AND annotator_id = %s AND state = %s AND expires_at > %s ORDER BY leased_at, id",
            [round_.pk, annotator.pk, Lease.State.HELD, _datetime_param(now)],
        )
        held = [
            _saved(Lease(
                id=_uuid_from_db(lease_id), round=round_, item_id=item_id, annotator=annotator, state=Lease.State.HELD,
                layout=json.loads(layout), leased_at=_datetime_from_db(leased_at), expires_at=_datetime_from_db(expires_at),
            ))
            for lease_id, item_id, layout, leased_at, expires_at in cursor.fetchall()
        ]
        for lease in held:
            if str(lease.pk) not in exclude:
                return lease
        max_leases = setting("ANNOTATION_MAX_LEASES")
        released = held[: max(0, len(held) - max_leases + 1)]
        for lease in released:
            _lease_release(cursor, lease)
        skip_items = {lease.item_id for lease in released}

        want_gold = round_.gold_rate > 0 and rng.random() < round_.gold_rate
        item = None
        for gold in ([True, False] if want_gold else [False]):
            item = _item_pick(cursor, round_=round_, annotator=annotator, gold=gold, skip_items=skip_items)
            if item is not None:
                break
        if item is None:
            return None
        layout = [image.public_id for image in _item_images(item)]
        rng.shuffle(layout)
        expires_at = now + timedelta(seconds=round_.lease_ttl_seconds)
        # An expired lease of this annotator on the item comes back with its id and layout.
        cursor.execute(
            "INSERT INTO annotation_lease (id, round_id, item_id, annotator_id, state, layout, created_at, leased_at,"
            " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (item_id, annotator_id)"
            " DO UPDATE SET state = excluded.state, leased_at = excluded.leased_at, expires_at = excluded.expires_at"
            " RETURNING id, layout",
            [
                _uuid_param(uuid.uuid4()), round_.pk, item.pk, annotator.pk, Lease.State.HELD, _json_param(layout),
                _datetime_param(now), _datetime_param(now), _datetime_param(expires_at),
            ],
        )
        lease_id, layout = cursor.fetchone()
    return _saved(Lease(
        id=_uuid_from_db(lease_id), round=round_, item=item, annotator=annotator, state=Lease.State.HELD,
        layout=json.loads(layout), leased_at=now, expires_at=expires_at,
    ))


_system_random = random.SystemRandom()


# --- submission and undo --------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    judgment: Judgment
    replayed: bool
    next_lease: Lease | None = None  # asked for with ``next_exclude``: the annotator's next task, if any


def _rate_limit_take(cursor, profile: AnnotatorProfile, now: datetime) -> None:
    """Token bucket on the profile row (locked by the caller)."""
    rate, burst = setting("ANNOTATION_SUBMIT_RATE"), setting("ANNOTATION_SUBMIT_BURST")
    if rate <= 0:
        return
    tokens = burst if profile.submit_tokens_at is None else profile.submit_tokens
    if profile.submit_tokens_at is not None:
        tokens = min(burst, tokens + max(0.0, (now - profile.submit_tokens_at).total_seconds()) * rate)
    if tokens < 1:
        raise Throttled("too many submissions; slow down", retry_after=(1 - tokens) / rate)
    profile.submit_tokens, profile.submit_tokens_at = tokens - 1, now
    cursor.execute(
        "UPDATE annotation_annotatorprofile SET submit_tokens = %s, submit_tokens_at = %s WHERE id = %s",
        [profile.submit_tokens, _datetime_param(now), profile.pk],
    )


def _replay(*, annotator, client_uuid) -> SubmitResult | None:
    existing = Judgment.objects.filter(client_uuid=client_uuid).first()
    if existing is None:
        return None
    if existing.annotator_id != annotator.pk:
        raise InvalidAnswer("this client_uuid was already used", field="client_uuid")
    return SubmitResult(judgment=existing, replayed=True)


def _lease_for_submit(cursor, *, annotator, lease_id) -> tuple[AnnotatorProfile, Lease] | None:
    """Lock the annotator's profile and their lease in one statement; the lease comes with its item and round."""
    try:
        lease_param = _uuid_param(lease_id)
    except ValueError:
        return None
    cursor.execute(
        "SELECT p.id, p.synthetic, p.submit_tokens, p.submit_tokens_at, l.state, l.layout, l.leased_at, l.expires_at,"
        " i.id, i.prompt_id, i.is_gold, i.gold_answer, " + _ROUND_COLUMNS +
        " FROM annotation_annotatorprofile p JOIN annotation_lease l ON l.annotator_id = p.user_id"
        " JOIN annotation_item i ON i.id = l.item_id JOIN annotation_round r ON r.id = l.round_id"
        " WHERE p.user_id = %s AND l.id = %s" + _lock(of="p, l"),
        [annotator.pk, lease_param],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    profile = _profile_from_row(annotator, row[0:4])
    state, layout, leased_at, expires_at, item_id, prompt_id, is_gold, gold_answer = row[4:12]
    round_ = _round_from_row(row[12:])
    item = _saved(Item(
        id=item_id, round=round_, prompt_id=prompt_id, is_gold=bool(is_gold),
        gold_answer=None if gold_answer is None else json.loads(gold_answer), k=round_.k,
    ))
    lease = _saved(Lease(
        id=_uuid_from_db(lease_id), round=round_, item=item, annotator=annotator, state=state,
        layout=json.loads(layout), leased_at=_datetime_from_db(leased_at), expires_at=_datetime_from_db(expires_at),
    ))
    return profile, lease


def judgment_submit(
    *, annotator, lease_id, client_uuid, answer: dict, elapsed_ms: int, now: datetime | None = None,
    enforce_rate_limit: bool = True, next_exclude: list | tuple | None = None,
) -> SubmitResult:
    """Store one judgment against the annotator's lease; a retry with the same client UUID is a no-op.

    The answer is stored in image ids; the layout the annotator saw comes from the lease.
    The item's aggregate is recomputed in the same transaction. With ``next_exclude`` (the
    leases the client still holds) the annotator's next task of the round is leased in that
    transaction too, as ``item_next_for_annotator`` would: one round trip per judgment.
    A replayed submission leases nothing; the caller asks ``item_next_for_annotator`` then.
    """
    now = now or timezone.now()
    if elapsed_ms is None or elapsed_ms < 0:
        raise InvalidAnswer("must be a non-negative integer", field="elapsed_ms")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            found = _lease_for_submit(cursor, annotator=annotator, lease_id=lease_id)
            if found is None:
                _profile_lock(annotator)
                replay = _replay(annotator=annotator, client_uuid=client_uuid)
                if replay:
                    return replay
                raise NotFound("no such lease for this annotator")
            profile, lease = found
            if lease.state == Lease.State.SUBMITTED:
                # Most likely a retry. (A retry after an undo finds the UUID taken: see IntegrityError below.)
                replay = _replay(annotator=annotator, client_uuid=client_uuid)
                if replay:
                    return replay
            item, round_ = lease.item, lease.round
            if round_.status != Round.Status.OPEN:
                raise Conflict(f"round {round_.pk} is {round_.status}: it takes no submissions", code="round_closed")
            if enforce_rate_limit:
                _rate_limit_take(cursor, profile, now)
            if lease.state == Lease.State.SUBMITTED:
                raise Conflict("this item is already judged by this annotator", code="already_judged")
            parsed = answer_parse(item=item, answer=answer)
            if lease.state == Lease.State.EXPIRED:
                # The slot was reclaimed: take one again if the item still has room.
                guard = "" if item.is_gold else " AND slots_taken < %s"
                cursor.execute(
                    "UPDATE annotation_item SET slots_taken = slots_taken + 1 WHERE id = %s" + guard,
                    [item.pk] + ([] if item.is_gold else [round_.k]),
                )
                if not cursor.rowcount:
                    raise Conflict("the lease expired and the item was given to others", code="lease_expired")
            gold_score = None
            if item.is_gold and item.gold_answer is not None:
                gold_score = _gold_score(parsed=parsed, gold=answer_parse(item=item, answer=item.gold_answer))
            judgment = Judgment(
                client_uuid=client_uuid, round=round_, item=item, annotator=annotator, lease=lease,
                outcome=parsed.outcome, winner_id=parsed.winner_id, loser_id=parsed.loser_id, layout=lease.layout,
                elapsed_ms=elapsed_ms, synthetic=profile.synthetic, gold_score=gold_score, created_at=now,
            )
            cursor.execute(
                "INSERT INTO annotation_judgment (client_uuid, round_id, item_id, annotator_id, lease_id, outcome,"
                " winner_id, loser_id, layout, elapsed_ms, synthetic, gold_score, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                [
                    _uuid_param(client_uuid), round_.pk, item.pk, annotator.pk, _uuid_param(lease.pk), parsed.outcome,
                    parsed.winner_id, parsed.loser_id, _json_param(lease.layout), elapsed_ms, profile.synthetic,
                    gold_score, _datetime_param(now),
                ],
            )
            judgment.pk = cursor.fetchone()[0]
            _saved(judgment)
            if parsed.answers is not None:
                AlignmentAnswer.objects.bulk_create(
                    [AlignmentAnswer(judgment=judgment, question_id=q, answer=a) for q, a in parsed.answers.items()]
                )
            cursor.execute(
                "UPDATE annotation_lease SET state = %s WHERE id = %s", [Lease.State.SUBMITTED, _uuid_param(lease.pk)]
            )
            lease.state = Lease.State.SUBMITTED
            item_aggregate(item=item)
            next_lease = None
            if next_exclude is not None:
                next_lease = _item_next(
                    round_=round_, annotator=annotator, exclude=next_exclude, now=now, rng=_system_random
                )
    except IntegrityError:
        # A concurrent retry with the same UUID won the race, or a second judgment of the item.
        replay = _replay(annotator=annotator, client_uuid=client_uuid)
        if replay:
            return replay
        raise Conflict("this item is already judged by this annotator", code="already_judged") from None
    return SubmitResult(judgment=judgment, replayed=False, next_lease=next_lease)


def judgment_undo(*, annotator, client_uuid, now: datetime | None = None) -> Lease:
    """Undo the annotator's latest judgment within the undo window; the item is leased back to them."""
    now = now or timezone.now()
    with transaction.atomic():
        _profile_lock(annotator)
        judgment = (
            Judgment.objects.select_for_update(no_key=True, of=("self",)).select_related("round", "item")
            .filter(client_uuid=client_uuid, annotator=annotator).first()
        )
        if judgment is None:
            raise NotFound("no such judgment for this annotator")
        if judgment.undone_at is not None:
            raise Conflict("this judgment is already undone", code="already_undone")
        latest = Judgment.objects.filter(annotator=annotator, undone_at__isnull=True).order_by("-created_at", "-id").first()
        if latest.pk != judgment.pk:
            raise Conflict("only the latest judgment can be undone", code="not_latest")
        if (now - judgment.created_at).total_seconds() > setting("ANNOTATION_UNDO_SECONDS"):
            raise Conflict("the undo window has passed", code="undo_window_passed")
        judgment.undone_at = now
        judgment.save(update_fields=["undone_at"])
        # The judgment's slot becomes the lease's slot again: slots_taken does not change.
        lease = Lease.objects.select_for_update(no_key=True).get(item=judgment.item, annotator=annotator)
        lease.state, lease.leased_at = Lease.State.HELD, now
        lease.expires_at = now + timedelta(seconds=judgment.round.lease_ttl_seconds)
        lease.save(update_fields=["state", "leased_at", "expires_at"])
        judgment.item.round = judgment.round
        item_aggregate(item=judgment.item)
        return lease


# --- aggregation ----------------------------------------------------------------------


def gold_accuracy(*, round_: Round, annotator_ids=None) -> dict[int, tuple[float, int]]:
    """Per annotator: (mean gold score, number of gold judgments) in the round."""
    rows = Judgment.objects.filter(round=round_, undone_at__isnull=True, gold_score__isnull=False)
    if annotator_ids is not None:
        rows = rows.filter(annotator_id__in=annotator_ids)
    return {
        row["annotator_id"]: (row["accuracy"], row["n"])
        for row in rows.values("annotator_id").annotate(accuracy=Avg("gold_score"), n=Count("id"))
    }


def annotators_excluded(*, round_: Round, annotator_ids=None) -> set[int]:
    """Annotators whose gold accuracy is below the round's threshold (with at least one gold judgment)."""
    if round_.gold_min_accuracy is None:
        return set()
    return {
        annotator for annotator, (accuracy, _n) in gold_accuracy(round_=round_, annotator_ids=annotator_ids).items()
        if accuracy < round_.gold_min_accuracy
    }


class _Vote(NamedTuple):
    id: int
    annotator_id: int
    outcome: str
    winner_id: int | None
    loser_id: int | None
    synthetic: bool


def item_aggregate(*, item: Item, excluded: set[int] | None = None) -> Aggregate:
    """Recompute one item's majority result from its current judgments.

    The aggregate row is locked before the judgments are read, so that of two concurrent
    submissions to one item the later one counts both.
    """
    round_ = item.round
    with connection.cursor() as cursor:
        lock = "SELECT item_id FROM annotation_aggregate WHERE item_id = %s" + _lock()
        cursor.execute(lock, [item.pk])
        if cursor.fetchone() is None:
            Aggregate.objects.get_or_create(item=item, defaults={"round": round_})
            cursor.execute(lock, [item.pk])
        cursor.execute(
            "SELECT id, annotator_id, outcome, winner_id, loser_id, synthetic FROM annotation_judgment"
            " WHERE item_id = %s AND undone_at IS NULL",
            [item.pk],
        )
        judgments = [_Vote(j_id, a, o, w, l, bool(syn)) for j_id, a, o, w, l, syn in cursor.fetchall()]
    aggregate = _saved(Aggregate(item_id=item.pk, round_id=round_.pk))
    if excluded is None:
        excluded = annotators_excluded(round_=round_, annotator_ids=[j.annotator_id for j in judgments])
    counted = [j for j in judgments if j.annotator_id not in excluded]
    aggregate.n_judgments = len(judgments)
    aggregate.n_excluded = len(judgments) - len(counted)
    aggregate.complete = len(judgments) >= round_.k
    aggregate.winner_id = aggregate.loser_id = aggregate.margin = aggregate.alignment_score = None
    aggregate.no_majority = False
    aggregate.question_results = {}
    kind = round_.kind
    if kind == Round.Kind.PAIRWISE:
        image_a, image_b = [image.pk for image in _item_images(item)]
        votes = []
        for j in counted:
            if j.outcome == Judgment.Outcome.WIN:
                votes.append(voting.A if j.winner_id == image_a else voting.B)
            else:
                votes.append(voting.TIE if j.outcome == Judgment.Outcome.TIE else voting.REJECT)
        result = voting.pairwise_majority(votes, k=round_.k, no_majority_rule=round_.no_majority_rule)
        aggregate.counts = result.counts
        aggregate.n_rejected = result.counts[voting.REJECT]
        used = [j for j, v in zip(counted, votes) if v != voting.REJECT]
        aggregate.no_majority = result.no_majority
        if result.outcome is None:
            aggregate.outcome = Aggregate.Outcome.PENDING
        elif result.outcome == voting.TIE:
            aggregate.outcome = Aggregate.Outcome.TIE
        else:
            aggregate.outcome = Aggregate.Outcome.WINNER
            aggregate.winner_id, aggregate.loser_id = (
                (image_a, image_b) if result.outcome == voting.A else (image_b, image_a)
            )
            aggregate.margin = result.margin
    elif kind == Round.Kind.BEST_WORST:
        images = [image.pk for image in _item_images(item)]
        result = voting.best_worst_majority([(j.winner_id, j.loser_id) for j in counted], images=images)
        public = {image.pk: image.public_id for image in _item_images(item)}
        aggregate.counts = {
            "best": {public[i]: n for i, n in result.best_counts.items()},
            "worst": {public[i]: n for i, n in result.worst_counts.items()},
        }
        aggregate.n_rejected = 0
        used = counted
        if not counted:
            aggregate.outcome = Aggregate.Outcome.PENDING
        elif result.ambiguous:
            aggregate.outcome = Aggregate.Outcome.AMBIGUOUS
        else:
            aggregate.outcome = Aggregate.Outcome.WINNER
            aggregate.winner_id, aggregate.loser_id, aggregate.margin = result.winner, result.loser, result.margin
    else:
        questions = _item_questions(item)
        parents = {q.pk: [p.pk for p in q.parents.all()] for q in questions}
        answers: dict[int, dict[int, bool]] = {j.id: {} for j in counted}
        for judgment_id, question_id, value in AlignmentAnswer.objects.filter(judgment_id__in=answers).values_list(
            "judgment_id", "question_id", "answer"
        ):
            answers[judgment_id][question_id] = value
        answer_sets = [answers[j.id] for j in counted]
        result = voting.alignment_majority(
            answer_sets, questions=[q.pk for q in questions], parents=parents, k=round_.k
        )
        aggregate.counts = {"yes": {str(q): n for q, n in result.yes_counts.items()}, "votes": result.n_votes}
        aggregate.question_results = {str(q): yes for q, yes in result.answers.items()}
        aggregate.alignment_score = result.score
        aggregate.n_rejected = 0
        used = counted
        aggregate.outcome = Aggregate.Outcome.ALIGNMENT if counted else Aggregate.Outcome.PENDING
    aggregate.n_used = len(used)
    aggregate.n_synthetic = sum(j.synthetic for j in used)
    aggregate.updated_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE annotation_aggregate SET outcome = %s, winner_id = %s, loser_id = %s, margin = %s, no_majority = %s,"
            " counts = %s, question_results = %s, alignment_score = %s, n_judgments = %s, n_used = %s, n_rejected = %s,"
            " n_excluded = %s, n_synthetic = %s, complete = %s, updated_at = %s WHERE item_id = %s",
            [
                aggregate.outcome, aggregate.winner_id, aggregate.loser_id, aggregate.margin, aggregate.no_majority,
                _json_param(aggregate.counts), _json_param(aggregate.question_results), aggregate.alignment_score,
                aggregate.n_judgments, aggregate.n_used, aggregate.n_rejected, aggregate.n_excluded,
                aggregate.n_synthetic, aggregate.complete, _datetime_param(aggregate.updated_at), item.pk,
            ],
        )
    return aggregate


@dataclass(frozen=True)
class RoundSummary:
    items: int
    complete: int
    pairs: int
    ties: int
    no_majority: int
    ambiguous: int
    judgments: int
    synthetic_judgments: int
    excluded_annotators: list[int]


def round_aggregate(*, round_: Round) -> RoundSummary:
    """Recompute every aggregate of the round (after gold changes, exclusions, or on demand)."""
    excluded = annotators_excluded(round_=round_)
    items = Item.objects.filter(round=round_).select_related("round").iterator(chunk_size=500)
    for item in items:
        with transaction.atomic():
            item_aggregate(item=item, excluded=excluded)
    return round_summary(round_=round_)


def round_summary(*, round_: Round) -> RoundSummary:
    rows = Aggregate.objects.filter(round=round_, item__is_gold=False)
    complete = rows.filter(complete=True)
    return RoundSummary(
        items=rows.count(),
        complete=complete.count(),
        pairs=complete.filter(outcome=Aggregate.Outcome.WINNER).count(),
        ties=complete.filter(outcome=Aggregate.Outcome.TIE).count(),
        no_majority=complete.filter(no_majority=True).count(),
        ambiguous=complete.filter(outcome=Aggregate.Outcome.AMBIGUOUS).count(),
        judgments=Judgment.objects.filter(round=round_, undone_at__isnull=True).count(),
        synthetic_judgments=complete.aggregate(n=Sum("n_synthetic"))["n"] or 0,
        excluded_annotators=sorted(annotators_excluded(round_=round_)),
    )
