"""Signals the training app sends; other apps react without training importing them."""

from django.dispatch import Signal

# Sent after the transaction that registered a run's checkpoint commits: sender=TrainingRun,
# kwargs run and model (the new ModelVersion).
training_run_succeeded = Signal()
