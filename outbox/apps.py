from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "outbox"
    verbose_name = "Task outbox"

    def ready(self):
        # Registers the flusher that celery beat sends by name (settings.CELERY_BEAT_SCHEDULE).
        from outbox import tasks  # noqa: F401
