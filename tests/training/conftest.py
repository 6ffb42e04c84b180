"""Fixtures shared by the training app's tests."""

import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def sft_folder(tmp_path):
    """Four random 40×40 images with captions: the engine's SFT image-folder format."""
    folder = tmp_path / "sft"
    folder.mkdir()
    rng = np.random.default_rng(0)
    with (folder / "metadata.jsonl").open("w") as f:
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": f"caption {i}"}) + "\n")
    return folder
