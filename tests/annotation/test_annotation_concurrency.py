"""Many annotators at once on PostgreSQL: no item beyond K, nobody twice on an item, nothing lost."""

from __future__ import annotations

import random
import threading
import uuid

import pytest
from django.db import connection
from django.db.models import Count

from annotation.services import assignment, submission
from annotation.models import Item, Judgment, Lease
from tests.annotation.builders import annotators, answer_for, pairwise_round

ANNOTATORS = 56
K = 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_annotators_work_a_round_to_completion(postgres):
    round_ = pairwise_round(n_items=30, k=K, name="crowd")
    people = annotators(ANNOTATORS)
    accepted: list[tuple[int, uuid.UUID, int]] = []  # (annotator, client uuid, item)
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(ANNOTATORS)

    def work(person, seed):
        rng = random.Random(seed)
        try:
            start.wait()
            while True:
                lease = assignment.item_next_for_annotator(round_=round_, annotator=person, rng=rng)
                if lease is None:
                    return
                key = uuid.uuid4()
                result = submission.judgment_submit(
                    annotator=person, lease_id=lease.lease.id, client_uuid=key,
                    answer=answer_for(lease, rng.choice(["first", "second", "tie"])), elapsed_ms=rng.randint(1, 9000),
                )
                if rng.random() < 0.3:  # a retried POST (lost response) must change nothing
                    again = submission.judgment_submit(
                        annotator=person, lease_id=lease.lease.id, client_uuid=key, answer=answer_for(lease), elapsed_ms=1,
                    )
                    assert again.replayed and again.judgment.id == result.judgment.id
                with lock:
                    accepted.append((person.pk, key, lease.lease.item_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(p, n)) for n, p in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]

    per_item = dict(Judgment.objects.filter(round=round_).values_list("item").annotate(n=Count("id")))
    assert max(per_item.values()) <= K
    assert sorted(per_item.values()) == [K] * 30  # enough annotators: every item completes
    pairs = Judgment.objects.values("item", "annotator").annotate(n=Count("id")).filter(n__gt=1)
    assert not pairs.exists()
    stored = set(Judgment.objects.filter(round=round_).values_list("annotator", "client_uuid", "item"))
    assert stored == set(accepted) and len(accepted) == 30 * K
    assert not Lease.objects.filter(round=round_, state=Lease.State.HELD).exists()
    assert all(item.slots_taken == K for item in Item.objects.filter(round=round_))
    assert all(item.aggregate.complete and item.aggregate.n_judgments == K for item in Item.objects.filter(round=round_))
