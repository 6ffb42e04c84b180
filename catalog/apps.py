from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Prompts, models and images"

    def ready(self):
        # Registers the tasks that other modules enqueue by name (config.celery.enqueue_on_commit).
        from catalog import tasks  # noqa: F401
