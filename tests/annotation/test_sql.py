"""The hand-written SQL (annotation/sql.py): its records and column lists match the models, and rows
decode by column name."""

from __future__ import annotations

import uuid
from dataclasses import FrozenInstanceError

import pytest
from django.utils import timezone

from annotation import sql
from annotation.models import Aggregate, Item, Judgment, Lease
from annotation.services import assignment
from tests.annotation.builders import annotators, pairwise_round


def columns_of(model) -> set[str]:
    return {f.column for f in model._meta.concrete_fields}


@pytest.mark.parametrize("record", sql.RECORDS, ids=lambda r: r.__name__)
def test_every_record_field_is_a_column_of_its_model(record):
    missing = set(record.columns()) - columns_of(record.model)
    assert not missing, f"{record.__name__} names columns {record.model.__name__} does not have: {sorted(missing)}"


@pytest.mark.parametrize("model, columns", sql.WRITTEN_COLUMNS, ids=lambda v: getattr(v, "__name__", ""))
def test_every_written_column_is_a_column_of_its_model(model, columns):
    assert set(columns) <= columns_of(model)


def test_the_judgment_insert_writes_every_required_column():
    required = {
        f.column for f in Judgment._meta.concrete_fields
        if not f.null and not f.has_default() and not f.primary_key
    }
    assert required <= set(sql.JUDGMENT_INSERT_COLUMNS)


def test_the_aggregate_update_writes_every_result_column():
    written = set(sql.AGGREGATE_UPDATE_COLUMNS) | {"item_id", "round_id"}
    assert written == columns_of(Aggregate)


def test_a_renamed_field_would_fail_the_check(monkeypatch):
    # The check above is only worth having if it notices a column that is gone.
    monkeypatch.setattr(sql.RoundRow, "model", Item)
    assert set(sql.RoundRow.columns()) - columns_of(sql.RoundRow.model)


@pytest.mark.django_db
def test_rows_decode_by_column_name_into_frozen_records():
    round_ = pairwise_round(n_items=1, k=2)
    (person,) = annotators(1)
    task = assignment.item_next_for_annotator(round_=round_, annotator=person)
    (lease, item), = sql.leases_held(round_id=round_.pk, annotator_id=person.pk)
    stored = Lease.objects.get()
    assert lease == sql.LeaseRow.from_instance(stored) == task.lease
    assert isinstance(lease.id, uuid.UUID) and lease.layout == stored.layout
    assert item == sql.ItemRow(id=stored.item_id, prompt_id=stored.item.prompt_id, is_gold=False, gold_answer=None)
    images = sql.item_images(item_id=stored.item_id)
    assert [(image.id, image.public_id, image.catalog_id) for image in images] == [
        (ii.image_id, ii.public_id, ii.image.public_id)
        for ii in stored.item.item_images.select_related("image").order_by("order")
    ]
    with pytest.raises(FrozenInstanceError):
        lease.state = "submitted"
