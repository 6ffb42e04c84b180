"""The hand-written SQL of the annotation hot path: assignment, submission and aggregation.

They run on every judgment. Built as ORM queries they cost about as much CPU as the rest of
the request together (84 → 180 judgments/s with these statements and prepared statements, see
docs/benchmarks.md), so they are written by hand, portable between PostgreSQL and SQLite ≥ 3.35
(``RETURNING``, ``ON CONFLICT``); the row-lock clauses are added on PostgreSQL only, SQLite
serializes writers.

Every statement lives here, behind a typed function. Rows come back as small frozen records
whose field names are the models' column names: select lists are generated from the records'
fields and rows are decoded by the column names the cursor reports, never by position.
``tests/annotation/test_sql.py`` checks every record and column list against the models, so a
renamed field fails a test rather than a request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import Any, ClassVar

from django.db import connection
from django.utils import timezone

from annotation.models import Aggregate as AggregateModel
from annotation.models import AnnotatorProfile, Item, ItemImage, Judgment, Lease, Round
from catalog.models import Image

# --- tables, parameters and values ---------------------------------------------------

PROFILES, ROUNDS, ITEMS, ITEM_IMAGES, IMAGES, LEASES, JUDGMENTS, AGGREGATES = (
    model._meta.db_table for model in (AnnotatorProfile, Round, Item, ItemImage, Image, Lease, Judgment, AggregateModel)
)



def _lock(*, skip_locked: bool = False, of: str = "") -> str:
    """Row-lock clause on PostgreSQL; empty on SQLite, which serializes writers anyway."""
    if not connection.features.has_select_for_update:
        return ""
    return " FOR NO KEY UPDATE" + (f" OF {of}" if of else "") + (" SKIP LOCKED" if skip_locked else "")


def _key_share(*, of: str) -> str:
    """A shared lock that only ``SELECT … FOR UPDATE`` waits for (closing a round); empty on SQLite."""
    return f" FOR KEY SHARE OF {of}" if connection.features.has_select_for_update else ""


def _uuid_param(value) -> uuid.UUID | str:
    value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    return value if connection.features.has_native_uuid_field else value.hex


def _uuid_value(value) -> uuid.UUID | None:
    return value if value is None or isinstance(value, uuid.UUID) else uuid.UUID(value)


def _datetime_param(value: datetime | None):
    return connection.ops.adapt_datetimefield_value(value)


def _datetime_value(value) -> datetime | None:
    if value is None or (isinstance(value, datetime) and timezone.is_aware(value)):
        return value
    return connection.ops.convert_datetimefield_value(value, None, connection)  # SQLite: naive UTC


def _json_param(value):
    return connection.ops.adapt_json_value(value, None)


def _json_value(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _bool_value(value) -> bool:
    return bool(value)  # SQLite answers 0/1


# --- records --------------------------------------------------------------------------


class Record:
    """A row of ``model``: each field is named after one of its columns (``attname``)."""

    model: ClassVar[type]
    decoders: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_row(cls, row, indexes: tuple[int, ...]):
        """The record of the row's values at ``indexes`` (one per column, in ``columns()`` order)."""
        values = [row[i] for i in indexes]
        for position, decode in _decoders_by_position(cls):
            values[position] = decode(values[position])
        return cls(*values)

    @classmethod
    def from_instance(cls, instance):
        """The record of a model instance the ORM loaded."""
        return cls(**{name: getattr(instance, name) for name in cls.columns()})


@dataclass(frozen=True, slots=True)
class ProfileRow(Record):
    model = AnnotatorProfile
    decoders = {"synthetic": _bool_value, "submit_tokens_at": _datetime_value}

    id: int
    synthetic: bool
    submit_tokens: float
    submit_tokens_at: datetime | None


@dataclass(frozen=True, slots=True)
class RoundRow(Record):
    """What assignment, submission and aggregation read of a round (duck-types with ``Round``)."""

    model = Round

    id: int
    kind: str
    criterion: str
    k: int
    status: str
    lease_ttl_seconds: int
    gold_rate: float
    no_majority_rule: str
    gold_min_accuracy: float | None
    close_rule: str


@dataclass(frozen=True, slots=True)
class ItemRow(Record):
    model = Item
    decoders = {"is_gold": _bool_value, "gold_answer": _json_value}

    id: int
    prompt_id: int
    is_gold: bool
    gold_answer: dict | None


@dataclass(frozen=True, slots=True)
class LeaseRow(Record):
    model = Lease
    decoders = {
        "id": _uuid_value, "layout": _json_value, "leased_at": _datetime_value, "expires_at": _datetime_value,
    }

    id: uuid.UUID
    round_id: int
    item_id: int
    annotator_id: int
    state: str
    layout: list[str]
    leased_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ItemImageRow(Record):
    """An image's place in one item: the image and the opaque id it is shown under there."""

    model = ItemImage

    image_id: int
    public_id: str


@dataclass(frozen=True, slots=True)
class ImageColumns(Record):
    model = Image

    public_id: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ImageRef:
    """What assignment, validation and aggregation need of an item's image (no file, model or seed).

    ``public_id`` is the item's own id for the image, the one annotators see and answer with: the same
    image has another id in every item, so nothing an annotator saw in one round points at an image in
    another. ``catalog_id`` is the image's id in the catalog, the one researchers use (gold answers).
    """

    id: int
    public_id: str
    catalog_id: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class VoteRow(Record):
    """One judgment as aggregation counts it."""

    model = Judgment
    decoders = {"synthetic": _bool_value}

    id: int
    annotator_id: int
    outcome: str
    winner_id: int | None
    loser_id: int | None
    synthetic: bool


@dataclass(frozen=True, slots=True)
class JudgmentRow(Record):
    model = Judgment
    decoders = {
        "client_uuid": _uuid_value, "lease_id": _uuid_value, "layout": _json_value, "synthetic": _bool_value,
        "created_at": _datetime_value, "undone_at": _datetime_value,
    }

    id: int | None
    client_uuid: uuid.UUID
    round_id: int
    item_id: int
    annotator_id: int
    lease_id: uuid.UUID | None
    outcome: str
    winner_id: int | None
    loser_id: int | None
    layout: list[str]
    elapsed_ms: int
    synthetic: bool
    gold_score: float | None
    created_at: datetime
    undone_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AggregateRow(Record):
    """The stored majority result of one item."""

    model = AggregateModel

    item_id: int
    outcome: str
    winner_id: int | None
    loser_id: int | None
    margin: float | None
    no_majority: bool
    counts: dict
    question_results: dict
    alignment_score: float | None
    n_judgments: int
    n_used: int
    n_rejected: int
    n_excluded: int
    n_synthetic: int
    complete: bool
    updated_at: datetime


RECORDS: tuple[type[Record], ...] = (
    ProfileRow, RoundRow, ItemRow, LeaseRow, ItemImageRow, ImageColumns, VoteRow, JudgmentRow, AggregateRow,
)

# Columns written by the INSERT and UPDATE statements below (checked against the models too).
LEASE_INSERT_COLUMNS = ("id", "round_id", "item_id", "annotator_id", "state", "layout", "created_at", "leased_at",
                        "expires_at", "skip_reason")
JUDGMENT_INSERT_COLUMNS = tuple(c for c in JudgmentRow.columns() if c not in ("id", "undone_at"))
AGGREGATE_UPDATE_COLUMNS = tuple(c for c in AggregateRow.columns() if c != "item_id")
WRITTEN_COLUMNS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (Lease, LEASE_INSERT_COLUMNS), (Judgment, JUDGMENT_INSERT_COLUMNS), (AggregateModel, AGGREGATE_UPDATE_COLUMNS),
    (AnnotatorProfile, ("submit_tokens", "submit_tokens_at")), (Item, ("slots_taken",)),
    (Lease, ("state", "skip_reason", "skipped_at")),
    (ItemImage, ("item_id", "image_id", "order")),
)


@cache
def _select(*parts: tuple[type[Record], str]) -> str:
    """``alias.column AS "alias__column"`` for every field of every (record, table alias)."""
    return ", ".join(
        f'{alias}."{column}" AS "{alias}__{column}"' for record, alias in parts for column in record.columns()
    )


@cache
def _returning(record: type[Record], alias: str) -> str:
    """A RETURNING list of the record's columns, named as ``_select`` names them."""
    return ", ".join(f'"{column}" AS "{alias}__{column}"' for column in record.columns())


@cache
def _decoders_by_position(record: type[Record]) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    return tuple((n, record.decoders[c]) for n, c in enumerate(record.columns()) if c in record.decoders)


def _plan(names: tuple[str, ...], parts: tuple[tuple[type[Record], str], ...]) -> tuple:
    """For each (record, alias): where the cursor put each of its columns, found by name."""
    where = {name: n for n, name in enumerate(names)}
    return tuple(
        (record, tuple(where[f"{alias}__{column}"] for column in record.columns())) for record, alias in parts
    )


_plans: dict[tuple, tuple] = {}


def _rows(statement: str, params: list, *parts: tuple[type[Record], str]) -> list[list]:
    """Run a statement; each row comes back as its records, built from the columns the cursor
    names ``alias__column``. The names are read once per statement and process: select lists are
    generated from the records, so a statement's columns never change.
    """
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
        if not rows:
            return []
        plan = _plans.get((statement, parts))
        if plan is None:
            plan = _plans[(statement, parts)] = _plan(tuple(d[0] for d in cursor.description), parts)
    return [[record.from_row(row, indexes) for record, indexes in plan] for row in rows]


def _first(rows: list[list]):
    """The first row's record (or records, when the row holds several), or None."""
    if not rows:
        return None
    return rows[0][0] if len(rows[0]) == 1 else rows[0]


# --- annotators -----------------------------------------------------------------------


@cache
def _profile_lock_statement(locking: str) -> str:
    return (
        f"SELECT {_select((ProfileRow, 'p'))} FROM {PROFILES} p WHERE p.user_id = %s" + locking
    )


def profile_lock(*, annotator_id: int) -> ProfileRow | None:
    """Lock an annotator's profile row (one assignment or submission per annotator at a time)."""
    return _first(_rows(_profile_lock_statement(_lock()), [annotator_id], (ProfileRow, "p")))


def profile_tokens_set(*, profile_id: int, tokens: float, at: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {PROFILES} SET submit_tokens = %s, submit_tokens_at = %s WHERE id = %s",
            [tokens, _datetime_param(at), profile_id],
        )


# --- items and leases -----------------------------------------------------------------


def item_images(*, item_id: int) -> list[ImageRef]:
    """An item's images in canonical order, under the item's ids for them."""
    rows = _rows(
        f"SELECT {_select((ItemImageRow, 'ii'), (ImageColumns, 'im'))} FROM {ITEM_IMAGES} ii"
        f' JOIN {IMAGES} im ON im.id = ii.image_id WHERE ii.item_id = %s ORDER BY ii."order"',
        [item_id], (ItemImageRow, "ii"), (ImageColumns, "im"),
    )
    return [
        ImageRef(id=shown.image_id, public_id=shown.public_id, catalog_id=image.public_id, width=image.width,
                 height=image.height)
        for shown, image in rows
    ]


def item_slot_take(*, item_id: int, k: int | None) -> bool:
    """Take a slot of the item if it has room below ``k`` (``None``: gold, outside K)."""
    guard = "" if k is None else " AND slots_taken < %s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ITEMS} SET slots_taken = slots_taken + 1 WHERE id = %s" + guard,
            [item_id] + ([] if k is None else [k]),
        )
        return bool(cursor.rowcount)


def lease_release(*, lease_id, item_id: int) -> None:
    """Give a held lease's slot back (the caller holds the annotator's profile lock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {LEASES} SET state = %s WHERE id = %s AND state = %s",
            [Lease.State.EXPIRED, _uuid_param(lease_id), Lease.State.HELD],
        )
        if cursor.rowcount:
            cursor.execute(f"UPDATE {ITEMS} SET slots_taken = slots_taken - 1 WHERE id = %s", [item_id])


def lease_skip(*, lease_id, item_id: int, held: bool, reason: str, at: datetime) -> None:
    """Mark the annotator's lease skipped; a held lease gives its slot back (the caller locked the lease)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {LEASES} SET state = %s, skip_reason = %s, skipped_at = %s WHERE id = %s",
            [Lease.State.SKIPPED, reason, _datetime_param(at), _uuid_param(lease_id)],
        )
        if held:
            cursor.execute(f"UPDATE {ITEMS} SET slots_taken = slots_taken - 1 WHERE id = %s", [item_id])


def item_pick(
    *, round_id: int, annotator_id: int, gold: bool, k: int, fresh: bool, skip_items: Iterable[int] = (),
    skip_leases: Iterable = (),
) -> ItemRow | None:
    """Take a slot of the fullest item that has one free and that this annotator may be given.

    ``fresh``: an item this annotator never had a lease of. Otherwise also one whose lease of theirs
    expired or was released (not one they hold, judged or skipped, nor one whose lease is in
    ``skip_leases``): the fallback once nothing fresh is left. Either way the NOT EXISTS is one
    probe of the (item, annotator) unique index.

    One statement: the scan locks its pick (``SKIP LOCKED``: items other annotators are
    taking are passed over, not waited for) and the UPDATE takes the slot, guarded by
    ``slots_taken < K`` (gold items are outside K).
    """
    skip_items = sorted(skip_items)
    params: list = [round_id, gold, annotator_id]
    mine = ""
    if not fresh:
        states = (Lease.State.HELD, Lease.State.SUBMITTED, Lease.State.SKIPPED)
        skip_leases = [_uuid_param(lease_id) for lease_id in skip_leases]
        mine = f" AND (l.state IN ({', '.join(['%s'] * len(states))})"
        if skip_leases:
            mine += f" OR l.id IN ({', '.join(['%s'] * len(skip_leases))})"
        mine += ")"
        params += [*states, *skip_leases]
    where = ""
    if skip_items:
        where += f" AND i.id NOT IN ({', '.join(['%s'] * len(skip_items))})"
        params += skip_items
    if gold:
        order, guard = "i.id", ""
    else:
        where += " AND i.slots_taken < %s"
        params.append(k)
        order, guard = "i.slots_taken DESC, i.id", " AND slots_taken < %s"
    return _first(_rows(
        f"UPDATE {ITEMS} SET slots_taken = slots_taken + 1 WHERE id = ("
        f" SELECT i.id FROM {ITEMS} i WHERE i.round_id = %s AND i.is_gold = %s"
        f" AND NOT EXISTS (SELECT 1 FROM {LEASES} l WHERE l.item_id = i.id AND l.annotator_id = %s" + mine + ")"
        + where + f" ORDER BY {order} LIMIT 1" + _lock(skip_locked=True) + ")"
        + guard + f" RETURNING {_returning(ItemRow, 'i')}",
        params + ([k] if guard else []), (ItemRow, "i"),
    ))


def leases_held(*, round_id: int, annotator_id: int) -> list[tuple[LeaseRow, ItemRow]]:
    """The annotator's held leases in the round with their items, oldest first (expired ones too)."""
    parts = ((LeaseRow, "l"), (ItemRow, "i"))
    rows = _rows(
        f"SELECT {_select(*parts)} FROM {LEASES} l JOIN {ITEMS} i ON i.id = l.item_id"
        " WHERE l.round_id = %s AND l.annotator_id = %s AND l.state = %s"
        " ORDER BY l.leased_at, l.id",
        [round_id, annotator_id, Lease.State.HELD], *parts,
    )
    return [tuple(row) for row in rows]


def lease_upsert(*, lease: LeaseRow) -> LeaseRow:
    """Insert a held lease; an expired lease of this annotator on the item comes back with its id and layout."""
    values = {
        "id": _uuid_param(lease.id), "round_id": lease.round_id, "item_id": lease.item_id,
        "annotator_id": lease.annotator_id, "state": lease.state, "layout": _json_param(lease.layout),
        "created_at": _datetime_param(lease.leased_at), "leased_at": _datetime_param(lease.leased_at),
        "expires_at": _datetime_param(lease.expires_at), "skip_reason": "",
    }
    return _first(_rows(_LEASE_UPSERT, [values[c] for c in LEASE_INSERT_COLUMNS], (LeaseRow, "l")))


_LEASE_UPSERT = (
    f"INSERT INTO {LEASES} ({', '.join(LEASE_INSERT_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(LEASE_INSERT_COLUMNS))}) ON CONFLICT (item_id, annotator_id)"
    " DO UPDATE SET state = excluded.state, leased_at = excluded.leased_at, expires_at = excluded.expires_at"
    f" RETURNING {_returning(LeaseRow, 'l')}"
)


def lease_state_set(*, lease_id, state: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {LEASES} SET state = %s WHERE id = %s", [state, _uuid_param(lease_id)])


@dataclass(frozen=True, slots=True)
class SubmitRows:
    """What a submission reads in its first statement: the locked profile and lease, the item, the round."""

    profile: ProfileRow
    lease: LeaseRow
    item: ItemRow
    round: RoundRow


@cache
def _lease_for_submit_statement(locking: str) -> str:
    parts = ((ProfileRow, "p"), (LeaseRow, "l"), (ItemRow, "i"), (RoundRow, "r"))
    return (
        f"SELECT {_select(*parts)} FROM {PROFILES} p"
        f" JOIN {LEASES} l ON l.annotator_id = p.user_id"
        f" JOIN {ITEMS} i ON i.id = l.item_id JOIN {ROUNDS} r ON r.id = l.round_id"
        " WHERE p.user_id = %s AND l.id = %s" + locking
    )


def lease_for_submit(*, annotator_id: int, lease_id) -> SubmitRows | None:
    """Lock the annotator's profile and their lease in one statement; the lease comes with its item and round."""
    try:
        lease_param = _uuid_param(lease_id)
    except ValueError:
        return None
    rows = _first(_rows(
        _lease_for_submit_statement(_lock(of="p, l") + _key_share(of="r")), [annotator_id, lease_param],
        (ProfileRow, "p"), (LeaseRow, "l"), (ItemRow, "i"), (RoundRow, "r"),
    ))
    return None if rows is None else SubmitRows(*rows)


# --- judgments and aggregates ---------------------------------------------------------


def judgment_insert(*, judgment: JudgmentRow) -> int:
    """Insert a judgment; returns its id."""
    params = {
        "client_uuid": _uuid_param(judgment.client_uuid),
        "lease_id": None if judgment.lease_id is None else _uuid_param(judgment.lease_id),
        "layout": _json_param(judgment.layout), "created_at": _datetime_param(judgment.created_at),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            _JUDGMENT_INSERT, [params[c] if c in params else getattr(judgment, c) for c in JUDGMENT_INSERT_COLUMNS]
        )
        return cursor.fetchone()[0]


_JUDGMENT_INSERT = (
    f"INSERT INTO {JUDGMENTS} ({', '.join(JUDGMENT_INSERT_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(JUDGMENT_INSERT_COLUMNS))}) RETURNING id"
)


def judgment_by_client_uuid(*, client_uuid) -> JudgmentRow | None:
    try:
        param = _uuid_param(client_uuid)
    except ValueError:
        return None
    return _first(_rows(
        f"SELECT {_select((JudgmentRow, 'j'))} FROM {JUDGMENTS} j WHERE j.client_uuid = %s", [param], (JudgmentRow, "j")
    ))


def aggregate_lock(*, item_id: int) -> bool:
    """Lock the item's aggregate row; False when it has none."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT item_id FROM {AGGREGATES} WHERE item_id = %s" + _lock(), [item_id])
        return cursor.fetchone() is not None


def item_votes(*, item_id: int) -> list[VoteRow]:
    """The item's judgments that are not undone."""
    rows = _rows(
        f"SELECT {_select((VoteRow, 'j'))} FROM {JUDGMENTS} j WHERE j.item_id = %s AND j.undone_at IS NULL",
        [item_id], (VoteRow, "j"),
    )
    return [vote for (vote,) in rows]


def aggregate_write(*, aggregate: AggregateRow) -> None:
    params = {
        "counts": _json_param(aggregate.counts), "question_results": _json_param(aggregate.question_results),
        "updated_at": _datetime_param(aggregate.updated_at),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            _AGGREGATE_WRITE,
            [params[c] if c in params else getattr(aggregate, c) for c in AGGREGATE_UPDATE_COLUMNS]
            + [aggregate.item_id],
        )


_AGGREGATE_WRITE = (
    f"UPDATE {AGGREGATES} SET {', '.join(f'{c} = %s' for c in AGGREGATE_UPDATE_COLUMNS)} WHERE item_id = %s"
)
