from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self):
        from catalog.admin_sections import lineage_columns
        from training import tasks  # noqa: F401  (registers the task names services enqueue)
        from training.run_page import trained_by_html

        lineage_columns.register("trained_by", title="trained by", render=trained_by_html)
