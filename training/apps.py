from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self):
        from annotation.catalog_api import produced_by
        from catalog.admin_sections import lineage_columns
        from training import tasks  # noqa: F401  (registers the task names services enqueue)
        from training.run_page import runs_by_output_model, trained_by_html

        lineage_columns.register("trained_by", title="trained by", render=trained_by_html)
        produced_by.register(runs_by_output_model)  # the research API's models show the run that made them
