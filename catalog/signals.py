"""Signals the catalog sends; the apps above it react without the catalog importing them."""

from django.dispatch import Signal

# Sent after the transaction in which the last job of a batch finished (done or failed) commits:
# sender=GenerationBatch, kwarg batch. A re-delivered generation task may send it again.
generation_batch_done = Signal()
