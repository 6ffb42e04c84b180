"""The toy prompt sets: training and evaluation captions with their questions, as JSONL.

    python -m toyworld.prompts --out data/prompts/toy

writes ``toy-train.jsonl`` and ``toy-eval.jsonl`` in the plain JSONL format ``import_prompts``
reads (``id``, ``prompt``, ``category``, ``questions`` with ``parents``). The captions are drawn
with a fixed seed from each split, so no caption is in both; ``category`` is the object count,
which the evaluation report breaks down by.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from toyworld.questions import scene_questions
from toyworld.scenes import sample_scene
from toyworld.splits import is_eval_caption

SET_SIZES = {"train": 1000, "eval": 200}
SEED = 20261201


def prompt_rows(split: str, count: int, *, seed: int = SEED) -> list[dict]:
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    rows, seen = [], set()
    while len(rows) < count:
        scene = sample_scene(rng)
        caption = scene.caption
        if caption in seen or is_eval_caption(caption) != (split == "eval"):
            continue
        seen.add(caption)
        rows.append({
            "id": f"toy-{split}-{len(rows) + 1:04d}",
            "prompt": caption,
            "category": f"{len(scene.objects)} object" + ("s" if len(scene.objects) > 1 else ""),
            "questions": [{"text": q.text, "parents": list(q.parents)} for q in scene_questions(scene)],
        })
    return rows


def write_sets(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, count in SET_SIZES.items():
        path = out_dir / f"toy-{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in prompt_rows(split, count)), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/prompts/toy"))
    args = parser.parse_args(argv)
    for path in write_sets(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
