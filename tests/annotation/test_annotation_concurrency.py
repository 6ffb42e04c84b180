"""Many annotators at once on PostgreSQL: no item beyond K, nobody twice on an item, nothing lost."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from django.db import connection
from django.db.models import Count

from annotation import selectors
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


SKIPPERS = 6
SKIP_K = 3
SKIP_ITEMS = 8


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_annotators_who_skip_at_random_leave_every_item_complete_or_out_of_annotators(postgres):
    round_ = pairwise_round(n_items=SKIP_ITEMS, k=SKIP_K, name="skippers")
    people = annotators(SKIPPERS)
    served: list[tuple[int, int, int]] = []  # (annotator, item, order served)
    skipped: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(SKIPPERS)

    def work(person, seed):
        rng = random.Random(seed)
        try:
            start.wait()
            step = 0
            task = assignment.item_next_for_annotator(round_=round_, annotator=person, rng=rng)
            for _ in range(200):
                if task is None:
                    # Items other annotators are taking are passed over (SKIP LOCKED), so "none left" can
                    # come while one is being let go: ask again while the dashboard still counts work left.
                    (mine,) = [r for r in selectors.annotator_progress(annotator=person)["rounds"] if r["id"] == round_.id]
                    if not mine["available_to_me"]:
                        return
                    time.sleep(0.02)
                    task = assignment.item_next_for_annotator(round_=round_, annotator=person, rng=rng)
                    continue
                step += 1
                with lock:
                    served.append((person.pk, task.lease.item_id, step))
                if rng.random() < 0.4:
                    with lock:
                        skipped.append((person.pk, task.lease.item_id, step))
                    task = assignment.lease_skip(
                        annotator=person, lease_id=task.lease.id, reason=rng.choice(Lease.SkipReason.values),
                        next_exclude=[],
                    ).next_task
                else:
                    task = submission.judgment_submit(
                        annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(), answer=answer_for(task),
                        elapsed_ms=rng.randint(1, 9000), next_exclude=[],
                    ).next_task
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

    judged = set(Judgment.objects.filter(round=round_, undone_at__isnull=True).values_list("item", "annotator"))
    skips = set(Lease.objects.filter(round=round_, state=Lease.State.SKIPPED).values_list("item", "annotator"))
    assert skips == {(item, person) for person, item, _ in skipped}
    assert not judged & skips
    for item in Item.objects.filter(round=round_):
        n_judged = sum(1 for item_id, _ in judged if item_id == item.pk)
        declined = {person for item_id, person in skips if item_id == item.pk}
        held = Lease.objects.filter(item=item, state=Lease.State.HELD).count()
        assert item.slots_taken == n_judged + held
        assert held == 0
        # Complete, or every annotator who did not judge it skipped it.
        assert n_judged == SKIP_K or n_judged + len(declined) == SKIPPERS
    pairs = Judgment.objects.values("item", "annotator").annotate(n=Count("id")).filter(n__gt=1)
    assert not pairs.exists()
    for person, item, step in skipped:
        assert not [s for p, i, s in served if (p, i) == (person, item) and s > step]
