"""Pixel-augmented post-training engine for latent diffusion models.

A plain PyTorch package: it imports nothing from Django, and importing this package
does not import torch, so the web process may read pipeline metadata through
``training.engine.pipeline_index`` without paying for (or risking) a torch import.
"""
