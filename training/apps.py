from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self):
        # Registers the tasks that services enqueue by name (config.celery.enqueue_on_commit).
        from training import tasks  # noqa: F401
