from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = "Evaluation"

    def ready(self):
        from evaluation.receivers import evaluate_new_checkpoint
        from training.signals import training_run_succeeded

        training_run_succeeded.connect(evaluate_new_checkpoint, dispatch_uid="evaluation.evaluate_new_checkpoint")
