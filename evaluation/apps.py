from django.apps import AppConfig
from django.db.models.signals import post_delete


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation"

    def ready(self):
        from catalog.admin_sections import lineage_columns
        from catalog.signals import generation_batch_done
        from evaluation import admin_sections, receivers, tasks  # noqa: F401  (registers the task names services enqueue)
        from training.run_page import run_page_sections
        from training.signals import training_run_succeeded

        lineage_columns.register("against_parent", title="against its parent", render=admin_sections.against_parent_html)
        run_page_sections.register(
            "evaluation", title="Evaluation against the base", render=admin_sections.run_evaluation_html
        )

        training_run_succeeded.connect(receivers.evaluate_new_checkpoint, dispatch_uid="evaluation.evaluate_new_checkpoint")
        generation_batch_done.connect(
            receivers.annotation_rounds_when_generated, dispatch_uid="evaluation.annotation_rounds_when_generated"
        )
        post_delete.connect(
            receivers.generation_batch_delete, sender=self.get_model("EvaluationRound"),
            dispatch_uid="evaluation.generation_batch_delete",
        )
