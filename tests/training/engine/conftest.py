"""Engine test fixtures: tiny pipelines and tiny datasets (the offline hub and the socket guard
are in the top-level conftest)."""

from __future__ import annotations

import pytest


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    """Build each tiny pipeline once per session: {"unet", "sdxl", "dit", "flow", "unet_v"} -> Path."""
    from training.engine.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-pipelines")
    paths = {family: build_tiny_pipeline(family, root / family) for family in ("unet", "sdxl", "dit", "flow")}
    paths["unet_v"] = build_tiny_pipeline("unet", root / "unet_v", prediction_type="v_prediction")
    return paths


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory):
    from training.engine.tiny import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-decoder") / "taesd")


def _write_png(path, seed: int, size: int = 40):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="session")
def sft_folder(tmp_path_factory):
    """An image folder with metadata.jsonl: four captioned random PNGs."""
    import json

    root = tmp_path_factory.mktemp("sft-data")
    captions = ["a red cat", "a blue dog", "the green tree", "an orange sun"]
    with (root / "metadata.jsonl").open("w") as f:
        for i, caption in enumerate(captions):
            _write_png(root / f"{i}.png", seed=i)
            f.write(json.dumps({"file_name": f"{i}.png", "text": caption}) + "\n")
    return root


@pytest.fixture(scope="session")
def preference_manifest(tmp_path_factory):
    """A JSONL manifest of four winner/loser pairs."""
    import json

    root = tmp_path_factory.mktemp("pref-data")
    (root / "img").mkdir()
    captions = ["a red cat", "a blue dog", "the green tree", "an orange sun"]
    with (root / "pairs.jsonl").open("w") as f:
        for i, caption in enumerate(captions):
            _write_png(root / "img" / f"w{i}.png", seed=100 + i)
            _write_png(root / "img" / f"l{i}.png", seed=200 + i)
            f.write(json.dumps({"caption": caption, "winner": f"img/w{i}.png", "loser": f"img/l{i}.png"}) + "\n")
    return root / "pairs.jsonl"
