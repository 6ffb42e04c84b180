"""Skipping an item with a reason, and assignment that never livelocks on declined items."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from annotation import errors, selectors
from annotation.models import Item, Judgment, Lease
from annotation.services import assignment, submission
from tests.annotation.builders import alignment_round, annotators, answer_for, best_worst_round, pairwise_round

pytestmark = pytest.mark.django_db

REASONS = [choice for choice, _label in Lease.SkipReason.choices]


def next_task(round_, person, *, exclude=(), now=None):
    return assignment.item_next_for_annotator(
        round_=round_, annotator=person, exclude=exclude, now=now, rng=random.Random(0)
    )


def submit(task, person, *, now=None):
    return submission.judgment_submit(
        annotator=person, lease_id=task.lease.id, client_uuid=uuid.uuid4(), answer=answer_for(task),
        elapsed_ms=900, now=now,
    )


# --- skip -------------------------------------------------------------------------------


@pytest.mark.parametrize("make_round", [pairwise_round, best_worst_round, alignment_round])
def test_a_skipped_item_goes_to_another_annotator_and_never_back(make_round):
    round_ = make_round(n_items=2, k=1)
    first, second = annotators(2)
    task = next_task(round_, first)
    result = assignment.lease_skip(annotator=first, lease_id=task.lease.id, reason="cannot_judge", next_exclude=[])
    assert not result.replayed
    assert result.next_task.lease.item_id != task.lease.item_id
    item = Item.objects.get(pk=task.lease.item_id)
    assert item.slots_taken == 0  # the slot is free for someone else
    lease = Lease.objects.get(pk=task.lease.id)
    assert (lease.state, lease.skip_reason) == ("skipped", "cannot_judge") and lease.skipped_at is not None
    submit(result.next_task, first)
    assert next_task(round_, first) is None  # the skipped item is not offered again, ever
    other = next_task(round_, second)
    assert other.lease.item_id == task.lease.item_id


def test_skipping_twice_changes_nothing_and_a_skipped_lease_takes_no_answer():
    round_ = pairwise_round(n_items=2, k=2)
    (person,) = annotators(1)
    task = next_task(round_, person)
    assignment.lease_skip(annotator=person, lease_id=task.lease.id, reason="image_does_not_load")
    again = assignment.lease_skip(annotator=person, lease_id=task.lease.id, reason="cannot_judge")
    assert again.replayed
    assert Lease.objects.get(pk=task.lease.id).skip_reason == "image_does_not_load"
    assert Item.objects.get(pk=task.lease.item_id).slots_taken == 0
    with pytest.raises(errors.Conflict) as refused:
        submit(task, person)
    assert refused.value.code == "skipped"


def test_a_judged_item_cannot_be_skipped_and_a_bad_reason_is_refused():
    round_ = pairwise_round(n_items=1, k=2)
    (person,) = annotators(1)
    task = next_task(round_, person)
    with pytest.raises(errors.InvalidInput) as bad:
        assignment.lease_skip(annotator=person, lease_id=task.lease.id, reason="bored")
    assert bad.value.field == "reason"
    submit(task, person)
    with pytest.raises(errors.Conflict) as refused:
        assignment.lease_skip(annotator=person, lease_id=task.lease.id, reason="cannot_judge")
    assert refused.value.code == "already_judged"


def test_an_expired_lease_can_be_skipped_without_freeing_a_slot_twice():
    round_ = pairwise_round(n_items=1, k=2)
    first, second = annotators(2)
    now = timezone.now()
    task = next_task(round_, first, now=now)
    later = now + timedelta(seconds=round_.lease_ttl_seconds + 1)
    next_task(round_, second, now=later)  # reclaims the first annotator's lease
    assert Item.objects.get(pk=task.lease.item_id).slots_taken == 1
    assignment.lease_skip(annotator=first, lease_id=task.lease.id, reason="not_my_expertise", now=later)
    assert Item.objects.get(pk=task.lease.item_id).slots_taken == 1


def test_skips_are_counted_in_the_round_summary_and_progress():
    round_ = pairwise_round(n_items=2, k=2)
    person, other = annotators(2)
    task = next_task(round_, person)
    assignment.lease_skip(annotator=person, lease_id=task.lease.id, reason="cannot_judge")
    next_task(round_, other)
    summary = selectors.round_summary(round_=round_)
    assert summary.skips == 1
    assert summary.skips_by_reason == {"cannot_judge": 1}
    (progress,) = [r for r in selectors.annotator_progress(annotator=person)["rounds"] if r["id"] == round_.id]
    assert progress["available_to_me"] == 1


def test_the_skip_api_answers_the_next_task_and_refuses_bad_input(client):
    round_ = pairwise_round(n_items=3, k=2)
    (person,) = annotators(1)
    client.force_login(person)
    first = client.post(reverse("annotate-next", args=[round_.id]), {}, content_type="application/json").json()["task"]
    url = reverse("annotate-skip")
    response = client.post(url, {"lease": first["lease"], "reason": "bored"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "reason" in response.json()
    response = client.post(url, {"lease": str(uuid.uuid4()), "reason": "cannot_judge"}, content_type="application/json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = client.post(
        url, {"lease": first["lease"], "reason": "image_does_not_load", "next": True, "exclude": []},
        content_type="application/json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["skipped"] == first["lease"] and body["replayed"] is False
    assert body["next"]["lease"] != first["lease"]
    retry = client.post(url, {"lease": first["lease"], "reason": "image_does_not_load"}, content_type="application/json")
    assert retry.status_code == 200 and retry.json() == {"skipped": first["lease"], "replayed": True}


def test_the_task_page_offers_the_skip_reasons(client):
    round_ = pairwise_round(n_items=1, k=1)
    (person,) = annotators(1)
    client.force_login(person)
    page = client.get(reverse("annotate-pairwise", args=[round_.id])).content.decode()
    assert reverse("annotate-skip") in page
    for reason in REASONS:
        assert reason in page


# --- the livelock -----------------------------------------------------------------------


def test_declined_items_never_block_new_work():
    """With two leases at most, an annotator who declines every item still gets every item once."""
    round_ = pairwise_round(n_items=6, k=5)
    (person,) = annotators(1)
    declined: list = []
    seen = []
    for _ in range(6):
        task = next_task(round_, person, exclude=declined)
        assert task is not None
        assert task.lease.item_id not in seen
        seen.append(task.lease.item_id)
        declined.append(task.lease.id)
        declined = declined[-2:]  # the client keeps excluding what it holds
    assert len(set(seen)) == 6


def test_a_released_item_comes_back_only_when_nothing_else_is_left():
    round_ = pairwise_round(n_items=3, k=5)
    (person,) = annotators(1)
    a = next_task(round_, person)
    b = next_task(round_, person, exclude=[a.lease.id])
    c = next_task(round_, person, exclude=[a.lease.id, b.lease.id])  # releases a
    assert c.lease.item_id not in {a.lease.item_id, b.lease.item_id}
    submit(b, person)
    submit(c, person)
    again = next_task(round_, person)
    assert again.lease.item_id == a.lease.item_id  # the only item left


def test_an_expired_lease_does_not_bring_its_item_back_first():
    round_ = pairwise_round(n_items=2, k=5)
    (person,) = annotators(1)
    now = timezone.now()
    first = next_task(round_, person, now=now)
    later = now + timedelta(seconds=round_.lease_ttl_seconds + 1)
    second = next_task(round_, person, now=later)
    assert second.lease.item_id != first.lease.item_id
    assert Item.objects.get(pk=first.lease.item_id).slots_taken == 0  # its own expired lease let go


# --- the property -----------------------------------------------------------------------


def _room(item, person, now) -> bool:
    """The item has a slot for this annotator once expired leases are reclaimed."""
    judged = Judgment.objects.filter(item=item, undone_at__isnull=True).count()
    others = Lease.objects.filter(item=item, state=Lease.State.HELD, expires_at__gt=now).exclude(annotator=person).count()
    return judged + others < item.k


def _before(round_, person, now):
    """What the annotator may be given now: fresh items, declined items (lease expired or released), held leases."""
    mine = {lease.item_id: lease for lease in Lease.objects.filter(round=round_, annotator=person)}
    fresh, declined = set(), set()
    for item in Item.objects.filter(round=round_):
        lease = mine.get(item.pk)
        if lease is None:
            if _room(item, person, now):
                fresh.add(item.pk)
        elif lease.state == Lease.State.EXPIRED or (lease.state == Lease.State.HELD and lease.expires_at <= now):
            if _room(item, person, now):
                declined.add(item.pk)
    held = [lease for lease in mine.values() if lease.state == Lease.State.HELD and lease.expires_at > now]
    return fresh, declined, sorted(held, key=lambda lease: (lease.leased_at, str(lease.id))), mine


def _ask(round_, person, *, exclude, now):
    fresh, declined, held, mine = _before(round_, person, now)
    task = next_task(round_, person, exclude=exclude, now=now)
    excluded = {str(lease_id) for lease_id in exclude}
    unexcluded = [lease for lease in held if str(lease.id) not in excluded]
    excluded_items = {lease.item_id for lease in mine.values() if str(lease.id) in excluded}
    if task is None:
        assert not unexcluded and not fresh and not (declined - excluded_items), "told none left, but work is there"
        return None
    item_id = task.lease.item_id
    assert str(task.lease.id) not in excluded
    if unexcluded:
        assert task.lease.id == unexcluded[0].id  # the held lease resumes
        return task
    previous = mine.get(item_id)
    assert previous is None or previous.state in (Lease.State.EXPIRED, Lease.State.HELD), "judged or skipped again"
    if previous is not None:
        assert not fresh, "a declined item came back while a fresh one was left"
    return task


rounds_and_ops = st.tuples(
    st.integers(1, 6), st.integers(1, 5), st.integers(1, 6), st.integers(1, 3),
    st.lists(
        st.tuples(st.sampled_from(["next", "skip", "release", "expire", "submit"]), st.integers(0, 5), st.integers(0, 9)),
        min_size=1, max_size=30,
    ),
)


@hsettings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rounds_and_ops)
def test_every_next_gives_new_work_or_says_none_is_left(case, settings):
    n_annotators, k, n_items, max_leases, ops = case
    settings.ANNOTATION_MAX_LEASES = max_leases
    with transaction.atomic():
        round_ = pairwise_round(n_items=n_items, k=k, name="livelock")
        people = annotators(n_annotators)
        clock = timezone.now()
        for op, who, arg in ops:
            person = people[who % n_annotators]
            held = list(Lease.objects.filter(
                round=round_, annotator=person, state=Lease.State.HELD, expires_at__gt=clock
            ).order_by("leased_at", "id"))
            if op == "next":
                _ask(round_, person, exclude=[], now=clock)
            elif op == "release":
                _ask(round_, person, exclude=[lease.id for lease in held], now=clock)
            elif op == "expire":
                if arg % 2 and held:
                    Lease.objects.filter(pk=held[arg % len(held)].pk).update(expires_at=clock - timedelta(seconds=1))
                else:
                    clock += timedelta(seconds=round_.lease_ttl_seconds + 1)
            elif held:
                lease = held[arg % len(held)]
                if op == "skip":
                    assignment.lease_skip(annotator=person, lease_id=lease.id, reason=REASONS[arg % 3], now=clock)
                else:
                    submission.judgment_submit(
                        annotator=person, lease_id=lease.id, client_uuid=uuid.uuid4(),
                        answer={"outcome": "tie"}, elapsed_ms=1, now=clock,
                    )
            clock += timedelta(seconds=1)
        # Whoever keeps asking and judging runs out of work in at most one call per item, plus one.
        person = people[0]
        for _ in range(n_items + 1):
            task = _ask(round_, person, exclude=[], now=clock)
            if task is None:
                break
            submit(task, person, now=clock)
        else:
            raise AssertionError("the annotator was never told that no work is left")
        for item in Item.objects.filter(round=round_):
            judged = Judgment.objects.filter(item=item, undone_at__isnull=True).count()
            holding = Lease.objects.filter(item=item, state=Lease.State.HELD).count()
            assert item.slots_taken == judged + holding <= k
        skipped = set(Lease.objects.filter(round=round_, state=Lease.State.SKIPPED).values_list("item", "annotator"))
        assert not skipped & set(Judgment.objects.filter(round=round_).values_list("item", "annotator"))
        doubles = Judgment.objects.values("item", "annotator").annotate(n=Count("id")).filter(n__gt=1)
        assert not doubles.exists()
        transaction.set_rollback(True)


def test_the_admin_counts_and_lists_skips():
    from django.test import Client

    from annotation.models import AnnotatorProfile
    from tests.factories import ResearcherFactory

    round_ = pairwise_round(n_items=2, k=2)
    (person,) = annotators(1)
    task = next_task(round_, person)
    assignment.lease_skip(annotator=person, lease_id=task.lease.id, reason="not_my_expertise")
    AnnotatorProfile.objects.get_or_create(user=person)
    client = Client()
    client.force_login(ResearcherFactory())
    listing = client.get("/admin/annotation/item/?skipped=yes")
    assert listing.status_code == 200
    assert f"/admin/annotation/item/{task.lease.item_id}/change/" in listing.content.decode()
    assert f"/admin/annotation/item/{task.lease.item_id}/" not in client.get("/admin/annotation/item/?skipped=no").content.decode()
    page = client.get(f"/admin/annotation/item/{task.lease.item_id}/change/").content.decode()
    assert "Not my expertise" in page and person.username in page
    assert client.get("/admin/annotation/lease/?skip_reason=not_my_expertise").status_code == 200
    profiles = client.get("/admin/annotation/annotatorprofile/")
    assert profiles.status_code == 200 and "Skips" in profiles.content.decode()
