"""Preference export: the manifest the trainer reads, the Pick-a-Pic parquet, same bytes twice, atomic."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from django.core.management import CommandError, call_command

from annotation import exports
from annotation.errors import InvalidInput

from annotation.services import assignment, submission
from annotation.models import Aggregate, Item
from annotation.simulation import Policy, round_simulate, synthetic_annotators
from tests.annotation.builders import (
    alignment_round, annotators, best_worst_round, catalog_ids, pairwise_round, shown_ids,
)

pytestmark = pytest.mark.django_db


def judged_pairwise_round(n_items=6, k=3, policy="prefer_model:pixel-dpo-secret"):
    round_ = pairwise_round(n_items=n_items, k=k)
    round_simulate(round_=round_, annotators=synthetic_annotators(count=k), policy=Policy.parse(policy), seed=7)
    return round_


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_rows_point_at_verified_files(tmp_path):
    round_ = judged_pairwise_round()
    result = exports.preferences_export(round_=round_, out_dir=tmp_path / "out")
    pairs = Aggregate.objects.filter(round=round_, complete=True, outcome="winner").order_by("item_id")
    assert result.pairs == pairs.count() > 0
    rows = [json.loads(line) for line in (result.path / "manifest.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [a.item_id for a in pairs]
    for row, aggregate in zip(rows, pairs):
        assert set(row) == {"caption", "winner", "loser", "margin", "prompt_id", "item_id", "winner_sha256",
                            "loser_sha256", "n_votes", "n_synthetic"}
        assert row["caption"] == aggregate.item.prompt.text
        for side in ("winner", "loser"):
            data = (result.path / row[side]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row[f"{side}_sha256"] == getattr(aggregate, side).sha256
        assert 0 < row["margin"] <= 1
        assert row["n_synthetic"] == row["n_votes"] == 3
    metadata = json.loads((result.path / "dataset.json").read_text())
    assert metadata["pairs"] == len(rows) and metadata["synthetic_judgments_in_pairs"] == 3 * len(rows)
    assert result.n_synthetic_judgments == 3 * len(rows)


def test_parquet_is_pick_a_pic_shaped(tmp_path):
    round_ = judged_pairwise_round()
    result = exports.preferences_export(round_=round_, out_dir=tmp_path / "out")
    table = pq.read_table(result.path / "pickapic.parquet")
    assert table.column_names == ["caption", "jpg_0", "jpg_1", "label_0", "label_1"]
    rows = [json.loads(line) for line in (result.path / "manifest.jsonl").read_text().splitlines()]
    for n, row in enumerate(rows):
        winner = (result.path / row["winner"]).read_bytes()
        label_0 = table.column("label_0")[n].as_py()
        assert label_0 + table.column("label_1")[n].as_py() == 1.0
        preferred = table.column("jpg_0" if label_0 == 1.0 else "jpg_1")[n].as_py()
        assert preferred == winner


def test_same_bytes_on_a_rerun(tmp_path):
    round_ = judged_pairwise_round()
    first = exports.preferences_export(round_=round_, out_dir=tmp_path / "a")
    second = exports.preferences_export(round_=round_, out_dir=tmp_path / "b")
    assert first.path.name == second.path.name
    assert files_of(first.path) == files_of(second.path)
    again = exports.preferences_export(round_=round_, out_dir=tmp_path / "a")
    assert (again.path, again.created) == (first.path, False)
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first.path.name]  # no leftovers


def test_new_votes_make_a_new_version(tmp_path):
    round_ = pairwise_round(n_items=2, k=1)
    people = synthetic_annotators(count=1)
    round_simulate(round_=round_, annotators=people, policy=Policy.parse("random"), max_judgments=1)
    first = exports.preferences_export(round_=round_, out_dir=tmp_path / "out")
    round_simulate(round_=round_, annotators=people, policy=Policy.parse("random"))
    second = exports.preferences_export(round_=round_, out_dir=tmp_path / "out")
    assert first.path != second.path and (first.pairs, second.pairs) == (1, 2)
    assert first.path.exists()  # the earlier dataset is left as it was


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    round_ = judged_pairwise_round()

    def broken(rows, path):
        Path(path).write_bytes(b"half a parquet")
        raise OSError("disk full")

    monkeypatch.setattr(exports, "_parquet_write", broken)
    with pytest.raises(OSError, match="disk full"):
        exports.preferences_export(round_=round_, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_changed_image_file_is_refused(tmp_path):
    round_ = judged_pairwise_round(n_items=2)
    aggregate = Aggregate.objects.filter(round=round_, outcome="winner").first()
    Path(aggregate.winner.file.path).write_bytes(b"not the image the annotators saw")
    with pytest.raises(InvalidInput, match="sha256"):
        exports.preferences_export(round_=round_, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_best_worst_pairs_export_and_alignment_rounds_are_refused(tmp_path):
    round_ = best_worst_round(n_items=2, k=3)
    round_simulate(round_=round_, annotators=synthetic_annotators(count=3), policy=Policy.parse("random"), seed=1)
    result = exports.preferences_export(round_=round_, out_dir=tmp_path / "out")
    assert result.pairs + result.ambiguous == 2
    with pytest.raises(InvalidInput, match="alignment"):
        exports.preferences_export(round_=alignment_round(n_items=1), out_dir=tmp_path / "out")


def test_export_command_and_human_votes_are_not_counted_as_synthetic(tmp_path, capsys):
    round_ = pairwise_round(n_items=1, k=1)
    (person,) = annotators(1)
    lease = assignment.item_next_for_annotator(round_=round_, annotator=person)
    submission.judgment_submit(annotator=person, lease_id=lease.lease.id, client_uuid=uuid.uuid4(),
                             answer={"outcome": "win", "winner": lease.lease.layout[0]}, elapsed_ms=5)
    call_command("export_preferences", str(round_.pk), "--out", str(tmp_path / "out"))
    out = capsys.readouterr().out
    assert "1 pairs" in out and "0 synthetic judgments" in out
    with pytest.raises(CommandError, match="no round"):
        call_command("export_preferences", "nope", "--out", str(tmp_path / "out"))
    assert Item.objects.get(round=round_).aggregate.n_synthetic == 0


def test_export_task_takes_a_primary_key_and_is_repeatable(tmp_path):
    from annotation.tasks import export_preferences

    round_ = judged_pairwise_round(n_items=2)
    first = export_preferences.apply(args=[round_.pk, str(tmp_path / "out")]).get()
    second = export_preferences.apply(args=[round_.pk, str(tmp_path / "out")]).get()
    assert first["path"] == second["path"] and (first["created"], second["created"]) == (True, False)


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(votes=st.lists(st.lists(st.sampled_from(["a", "b", "tie"]), min_size=3, max_size=3), min_size=1, max_size=4))
def test_export_is_deterministic_for_any_votes(tmp_path_factory, votes):
    """Whatever the votes, two exports are byte-identical and hold exactly the items with a majority winner."""
    from django.db import transaction

    out = tmp_path_factory.mktemp("export")
    with transaction.atomic():
        round_ = pairwise_round(n_items=len(votes), k=3, name="property")
        people = annotators(3)
        items = list(Item.objects.filter(round=round_).order_by("id"))
        expected = []
        for item, item_votes in zip(items, votes):
            a, b = catalog_ids(item)
            shown = dict(zip((a, b), shown_ids(item)))
            for person, vote in zip(people, item_votes):
                lease = assignment.item_next_for_annotator(round_=round_, annotator=person, rng=random.Random(0))
                assert lease.lease.item_id == item.pk  # breadth-first: the round's items are finished in order
                answer = {"outcome": "tie"} if vote == "tie" else {"outcome": "win",
                                                                    "winner": shown[a if vote == "a" else b]}
                submission.judgment_submit(annotator=person, lease_id=lease.lease.id, client_uuid=uuid.uuid4(),
                                         answer=answer, elapsed_ms=1)
            winner = next((v for v in ("a", "b") if item_votes.count(v) >= 2), None)
            if winner:
                expected.append((item.pk, a if winner == "a" else b))
        first = exports.preferences_export(round_=round_, out_dir=out / "1")
        second = exports.preferences_export(round_=round_, out_dir=out / "2")
        assert files_of(first.path) == files_of(second.path)
        rows = [json.loads(line) for line in (first.path / "manifest.jsonl").read_text().splitlines()]
        winners = {img.sha256: img.public_id for item in items for img in item.images.all()}
        assert [(r["item_id"], winners[r["winner_sha256"]]) for r in rows] == expected
        transaction.set_rollback(True)
