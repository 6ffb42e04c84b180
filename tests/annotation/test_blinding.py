"""Blinding across rounds: an image shown in two rounds has a different id in each.

A best/worst grid shows five images of one model. If an image kept its id everywhere, an
annotator who saw the grid could recognise the same image in a pairwise item and learn which
side came from that model. Every item gives its images ids of their own; the file is stored once.
"""

from __future__ import annotations

import json

import pytest

from annotation.errors import InvalidAnswer
from annotation.models import Item, ItemImage, Judgment
from annotation.services import assignment, rounds, submission
from catalog.models import Image
from tests.annotation.builders import annotators, best_worst_round
from tests.annotation.test_annotation_api import Session

pytestmark = pytest.mark.django_db


def grid_then_pair():
    """A best/worst round of five images of one model, then a pairwise round of two of those images."""
    grid_round = best_worst_round(n_items=1)
    grid_item = Item.objects.get(round=grid_round)
    first, second = [ii.image for ii in grid_item.item_images.order_by("order")][:2]
    pair_round = rounds.round_create(
        name="pair", kind="pairwise", criterion="visual_flaws", k=5,
        items=[rounds.ItemSpec(prompt_id=grid_item.prompt_id, image_ids=(first.pk, second.pk))],
    )
    return grid_round, pair_round, (first, second)


def test_no_image_id_is_shared_between_two_rounds():
    grid_round, pair_round, shared = grid_then_pair()
    session = Session(annotators(1)[0])
    grid = session.next(grid_round).json()["task"]
    pair = session.next(pair_round).json()["task"]
    grid_ids = {image["id"] for image in grid["images"]}
    pair_ids = {image["id"] for image in pair["images"]}
    assert len(grid_ids) == 5 and len(pair_ids) == 2
    assert not grid_ids & pair_ids
    assert not {image["url"] for image in grid["images"]} & {image["url"] for image in pair["images"]}
    # No catalog id reaches the annotator, in either task.
    payload = json.dumps([grid, pair])
    assert not any(image.public_id in payload for image in Image.objects.all())
    # Every id in the database is its item's alone, and none is a catalog id.
    shown = list(ItemImage.objects.values_list("public_id", flat=True))
    assert len(set(shown)) == len(shown) == 7
    assert not set(shown) & set(Image.objects.values_list("public_id", flat=True))
    assert {ii.image_id for ii in ItemImage.objects.filter(item__round=pair_round)} == {i.pk for i in shared}


def test_the_same_image_under_two_ids_is_one_file():
    grid_round, pair_round, (first, _) = grid_then_pair()
    session = Session(annotators(1)[0])
    grid = session.next(grid_round).json()["task"]
    pair = session.next(pair_round).json()["task"]
    in_grid = ItemImage.objects.get(item__round=grid_round, image=first).public_id
    in_pair = ItemImage.objects.get(item__round=pair_round, image=first).public_id
    assert in_grid != in_pair
    url_grid = next(i["url"] for i in grid["images"] if i["id"] == in_grid)
    url_pair = next(i["url"] for i in pair["images"] if i["id"] == in_pair)
    bodies = [b"".join(session.get(url).streaming_content) for url in (url_grid, url_pair)]
    assert bodies[0] == bodies[1] == first.file.open("rb").read()
    assert Image.objects.count() == 5  # the pairwise round made no copy


def test_an_id_seen_in_one_round_names_nothing_in_another():
    grid_round, pair_round, (first, second) = grid_then_pair()
    (person,) = annotators(1)
    assignment.item_next_for_annotator(round_=grid_round, annotator=person)
    pair = assignment.item_next_for_annotator(round_=pair_round, annotator=person)
    seen_in_grid = ItemImage.objects.get(item__round=grid_round, image=first).public_id
    with pytest.raises(InvalidAnswer, match="winner"):
        submission.judgment_submit(annotator=person, lease_id=pair.lease.id, client_uuid="0" * 32,
                                   answer={"outcome": "win", "winner": seen_in_grid}, elapsed_ms=1)
    # The catalog id, which researchers use, is not an annotator's answer either.
    with pytest.raises(InvalidAnswer, match="winner"):
        submission.judgment_submit(annotator=person, lease_id=pair.lease.id, client_uuid="1" * 32,
                                   answer={"outcome": "win", "winner": first.public_id}, elapsed_ms=1)
    in_pair = ItemImage.objects.get(item__round=pair_round, image=first).public_id
    result = submission.judgment_submit(annotator=person, lease_id=pair.lease.id, client_uuid="2" * 32,
                                        answer={"outcome": "win", "winner": in_pair}, elapsed_ms=1)
    judgment = Judgment.objects.get(pk=result.judgment.id)
    assert (judgment.winner_id, judgment.loser_id) == (first.pk, second.pk)
    assert sorted(judgment.layout) == sorted(ItemImage.objects.filter(item__round=pair_round)
                                             .values_list("public_id", flat=True))


def test_an_annotator_holding_one_round_cannot_open_the_images_of_another():
    grid_round, pair_round, (first, _) = grid_then_pair()
    session = Session(annotators(1)[0])
    session.next(pair_round)
    in_grid = ItemImage.objects.get(item__round=grid_round, image=first).public_id
    in_pair = ItemImage.objects.get(item__round=pair_round, image=first).public_id
    assert session.get(f"/img/{in_pair}.png").status_code == 200
    assert session.get(f"/img/{in_grid}.png").status_code == 404  # the same file, under the other round's id
