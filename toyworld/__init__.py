"""The toy world: captioned procedural scenes, their yes/no questions, a pixel oracle, and
small diffusers pipelines trained on them by the project's own engine.

Pure Python (numpy, Pillow; torch only in ``toyworld.recipes``); imports no Django. The demo,
the simulated annotators and the replication study run on it, so that the whole loop runs on
a laptop CPU with no download.
"""

from toyworld.scenes import RESOLUTION, Scene, SceneObject, parse_caption, render, sample_scene

__all__ = ["RESOLUTION", "Scene", "SceneObject", "parse_caption", "render", "sample_scene"]
