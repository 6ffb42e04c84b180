"""Tasks travel through the outbox: written with the caller's rows, sent after commit, kept while the broker is down."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from config.celery import app, enqueue_on_commit
from outbox.models import OutboxMessage
from outbox.services import messages_prune, messages_send
from outbox.tasks import outbox_flush
from tests.factories import AnnotatorFactory, ResearcherFactory
from training.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db

HEARTBEAT = "training.tasks.heartbeat"
REFUSED = "Error 111 connecting to 127.0.0.1:1. Connection refused."


@pytest.fixture
def published(monkeypatch):
    """Publishes of the heartbeat task, recorded instead of sent."""
    sent = []
    monkeypatch.setattr(app.tasks[HEARTBEAT], "apply_async", lambda args, **options: sent.append(args))
    return sent


@pytest.fixture
def broker_down(monkeypatch):
    def refuse(args, **options):
        raise OperationalError(REFUSED)

    monkeypatch.setattr(app.tasks[HEARTBEAT], "apply_async", refuse)


def test_a_rolled_back_transaction_leaves_no_message_and_sends_nothing(published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            enqueue_on_commit(HEARTBEAT, "default")
            assert OutboxMessage.objects.count() == 1
            raise RuntimeError("the caller's rows are rolled back")
    assert callbacks == [] and published == []
    assert not OutboxMessage.objects.exists()


def test_a_commit_sends_the_task_and_marks_it_sent(eager_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            enqueue_on_commit(HEARTBEAT, "default")
            assert not WorkerHeartbeat.objects.exists()  # nothing runs before the commit
    assert WorkerHeartbeat.objects.get().queue == "default"
    message = OutboxMessage.objects.get()
    assert message.sent_at is not None and message.attempts == 1 and message.last_error == ""
    assert message.claimed_until is None


def test_an_unknown_task_name_fails_in_the_caller_and_writes_nothing():
    with pytest.raises(KeyError):
        enqueue_on_commit("training.tasks.no_such_task", 1)
    assert not OutboxMessage.objects.exists()


def test_a_broker_outage_leaves_the_task_pending_with_the_error_and_one_warning(
    broker_down, django_capture_on_commit_callbacks, caplog
):
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_on_commit(HEARTBEAT, "default")
    message = OutboxMessage.objects.get()
    assert message.sent_at is None and message.attempts == 1 and REFUSED in message.last_error
    assert message.claimed_until is None  # the next flush may take it at once
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "queued in the outbox" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


def test_requeue_stuck_sends_what_waits_once_the_broker_is_back(broker_down, monkeypatch, capsys):
    for queue in ("default", "gpu"):
        OutboxMessage.objects.create(task_name=HEARTBEAT, args=[queue])
    with pytest.raises(CommandError, match=r"2 task\(s\) still pending in the outbox: OperationalError: .*refused"):
        call_command("requeue_stuck")
    assert capsys.readouterr().out == "sent 0 task(s) from the outbox\n"
    assert OutboxMessage.objects.filter(sent_at=None, attempts=1).count() == 1  # the first error stops the send
    monkeypatch.undo()
    sent = []
    monkeypatch.setattr(app.tasks[HEARTBEAT], "apply_async", lambda args, **options: sent.append(args))

    call_command("requeue_stuck")
    assert capsys.readouterr().out == "sent 2 task(s) from the outbox\n0 task(s) still pending\n"
    assert sent == [["default"], ["gpu"]] and not OutboxMessage.objects.filter(sent_at=None).exists()
    call_command("requeue_stuck")
    assert sent == [["default"], ["gpu"]]  # a sent message is never sent again


def test_a_second_sender_never_sends_a_message_another_one_is_sending(monkeypatch):
    message = OutboxMessage.objects.create(task_name=HEARTBEAT, args=["default"])
    sent, meanwhile = [], []

    def publish(args, **options):
        # A beat flush (or requeue_stuck) runs while this sender is publishing the message.
        meanwhile.append(messages_send(app=app))
        sent.append(args)

    monkeypatch.setattr(app.tasks[HEARTBEAT], "apply_async", publish)
    result = messages_send(app=app, ids=[message.pk])
    assert (result.sent, result.pending) == (1, 0)
    assert sent == [["default"]] and (meanwhile[0].sent, meanwhile[0].pending) == (0, 1)


def test_a_claim_left_by_a_sender_that_died_runs_out(published):
    now = timezone.now()
    held = OutboxMessage.objects.create(task_name=HEARTBEAT, args=["held"], claimed_until=now + timedelta(seconds=30))
    OutboxMessage.objects.create(task_name=HEARTBEAT, args=["abandoned"], claimed_until=now - timedelta(seconds=1))
    result = messages_send(app=app)
    assert published == [["abandoned"]] and (result.sent, result.pending) == (1, 1)
    held.refresh_from_db()
    assert held.sent_at is None


def test_a_message_for_a_task_that_no_longer_exists_stays_pending_and_the_others_go(published):
    gone = OutboxMessage.objects.create(task_name="catalog.tasks.renamed_since", args=[1])
    OutboxMessage.objects.create(task_name=HEARTBEAT, args=["default"])
    result = messages_send(app=app)
    assert published == [["default"]] and (result.sent, result.pending) == (1, 1)
    gone.refresh_from_db()
    assert gone.sent_at is None and "renamed_since" in gone.last_error


def test_beat_flushes_the_outbox_every_minute_and_forgets_old_sent_messages(eager_tasks):
    entry = app.conf.beat_schedule["outbox-flush"]
    assert entry["task"] == outbox_flush.name and entry["schedule"] == 60.0
    old = timezone.now() - timedelta(days=8)
    OutboxMessage.objects.create(task_name=HEARTBEAT, args=["sent long ago"], sent_at=old)
    OutboxMessage.objects.create(task_name=HEARTBEAT, args=["gpu"], created_at=old)  # pending: kept however old
    assert outbox_flush.apply().get() == "sent 1, 0 pending, 1 old sent messages deleted"
    assert WorkerHeartbeat.objects.get().queue == "gpu"
    assert list(OutboxMessage.objects.values_list("args", flat=True)) == [["gpu"]]
    assert messages_prune() == 0


def test_researchers_see_the_outbox_and_send_pending_tasks_from_the_admin(client, published):
    pending = OutboxMessage.objects.create(task_name=HEARTBEAT, args=["default"], attempts=1, last_error=REFUSED)
    OutboxMessage.objects.create(task_name=HEARTBEAT, args=["gpu"], sent_at=timezone.now())
    url = "/admin/outbox/outboxmessage/"
    client.force_login(AnnotatorFactory())
    assert client.get(url).status_code == 302

    client.force_login(ResearcherFactory())
    page = client.get(url, {"state": "pending"})
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [pending] and b"Connection refused" in page.content

    response = client.post(url, {"action": "send_now_action", "_selected_action": [pending.pk]}, follow=True)
    assert response.status_code == 200 and b"Sent 1 task(s)" in response.content
    assert published == [["default"]]
    pending.refresh_from_db()
    assert pending.sent_at is not None and pending.last_error == ""
