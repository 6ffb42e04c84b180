"""Measured figures of the toy world: how right the oracle is, and how good the toy models are.

    python -m toyworld.quality oracle  [--scenes 300]                  # oracle on renders
    python -m toyworld.quality models  [--prompts 100] [--out toyworld/weights/quality.json]

``oracle`` reports the share of right answers on held-out ground-truth renders and on renders
of perturbed scenes (where some answers are "no"), and the texture fidelity of clean, blurred,
JPEG-compressed and VAE round-tripped renders. ``models`` samples each shipped pipeline on the
evaluation split through the engine's sampler and reports, with 95 % Wilson or bootstrap
intervals over prompts: the share of samples whose every object has the right shape and colour,
the oracle's alignment accuracy and the texture fidelity. ``docs/toyworld.md`` quotes both.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from toyworld import oracle
from toyworld.questions import scene_questions, true_answer
from toyworld.scenes import COLOURS, SHAPES, SIZES, TEXTURES, Scene, parse_caption, render, sample_scene, to_uint8
from toyworld.splits import is_eval_caption

WEIGHTS = Path(__file__).parent / "weights"
MODELS = {"toy-sd": WEIGHTS / "toy-sd", "toy-pixart": WEIGHTS / "toy-pixart"}


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))


def mean_interval(values, *, seed: int = 0, resamples: int = 2000) -> dict:
    values = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return {"mean": float(values.mean()), "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]}


def perturb(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same layout with some shapes, colours, textures and sizes changed (3 in 10 each)."""
    used = {o.shape for o in scene.objects}
    objects = []
    for obj in scene.objects:
        changes = {}
        free = [s for s in SHAPES if s not in used]
        if free and rng.random() < 0.3:
            changes["shape"] = free[int(rng.integers(len(free)))]
            used.add(changes["shape"])
        if rng.random() < 0.3:
            changes["colour"] = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        if rng.random() < 0.3:
            changes["texture"] = TEXTURES[int(rng.integers(len(TEXTURES)))]
        if rng.random() < 0.3:
            changes["size"] = SIZES[int(rng.integers(len(SIZES)))]
        objects.append(dataclasses.replace(obj, **changes))
    return Scene(objects=tuple(objects), background=scene.background)


def degrade(image: np.ndarray, how: str, vae=None) -> np.ndarray:
    from PIL import Image, ImageFilter

    picture = Image.fromarray(to_uint8(image))
    if how == "clean":
        return np.asarray(picture)
    if how == "blur":
        return np.asarray(picture.filter(ImageFilter.GaussianBlur(0.8)))
    if how == "jpeg":
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=25)
        return np.asarray(Image.open(buffer).convert("RGB"))
    if how == "vae":
        import torch

        with torch.no_grad():
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() * 2 - 1
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample[0]
        return to_uint8((y.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) / 2)
    raise ValueError(how)


def oracle_figures(scenes: int = 300, *, seed: int = 2026, vae_dir: Path | None = None) -> dict:
    """The oracle on held-out renders: answers right, and fidelity of degraded renders."""
    rng = np.random.default_rng(seed)
    held_out = []
    while len(held_out) < scenes:
        scene = sample_scene(rng)
        if is_eval_caption(scene.caption):
            held_out.append(scene)
    right = total = 0
    right_perturbed = total_perturbed = noes = 0
    for scene in held_out:
        answers = oracle.answer_questions(to_uint8(render(scene)), scene.caption)
        right += sum(answers.values())
        total += len(answers)
        shown = perturb(scene, rng)
        answers = oracle.answer_questions(to_uint8(render(shown)), scene.caption)
        for question in scene_questions(scene):
            truth = true_answer(question, scene, shown)
            right_perturbed += answers[question.order] == truth
            noes += not truth
            total_perturbed += 1
    vae = None
    kinds = ["clean", "blur", "jpeg"]
    if vae_dir is not None:
        import torch
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()
        kinds.append("vae")
    fidelity = {kind: [] for kind in kinds}
    below = {kind: 0 for kind in kinds if kind != "clean"}
    for scene in held_out[:100]:
        clean = render(scene)
        scores = {kind: oracle.texture_fidelity(degrade(clean, kind, vae), scene.caption) for kind in kinds}
        for kind, score in scores.items():
            fidelity[kind].append(score)
            if kind != "clean" and score < scores["clean"]:
                below[kind] += 1
    return {
        "scenes": scenes,
        "renders": {"right": right, "questions": total, "accuracy": right / total, "ci95": wilson(right, total)},
        "perturbed": {"right": right_perturbed, "questions": total_perturbed, "no_answers": noes,
                      "accuracy": right_perturbed / total_perturbed, "ci95": wilson(right_perturbed, total_perturbed)},
        "fidelity": {kind: mean_interval(values) for kind, values in fidelity.items()},
        "ranked_below_clean": {kind: f"{count}/{len(fidelity['clean'])}" for kind, count in below.items()},
    }


def model_figures(model_dir: Path, captions: list[str], *, seed: int = 0, steps: int | None = None) -> dict:
    """Sample one image per caption and score it with the oracle."""
    from PIL import Image

    from training.engine.config import SampleConfig
    from training.engine.sampling import sample

    config = SampleConfig(batch_size=16, **({"steps": steps} if steps else {}))
    with tempfile.TemporaryDirectory() as tmp:
        record = sample(model_dir, captions, [seed + i for i in range(len(captions))], tmp, config)
        images = [np.asarray(Image.open(Path(tmp) / entry["file"]).convert("RGB")) for entry in record["images"]]
    correct, alignment, fidelity = [], [], []
    per_object = {"present": [], "shape": [], "colour": []}
    for image, caption in zip(images, captions, strict=True):
        correct.append(oracle.shape_and_colour_correct(image, caption))
        view = oracle.judge(image, caption)
        alignment.append(view.alignment)
        fidelity.append(view.fidelity)
        scene = parse_caption(caption)
        blobs = oracle.look(image, scene)
        for obj in scene.objects:
            seen = blobs[obj.position]
            per_object["present"].append(seen.shape is not None)
            per_object["shape"].append(seen.shape == obj.shape)
            per_object["colour"].append(seen.colour == obj.colour)
    objects = len(per_object["shape"])
    return {
        "prompts": len(captions),
        "sampler": {k: record[k] for k in ("scheduler", "steps", "guidance_scale")},
        "shape_and_colour_correct": {"rate": float(np.mean(correct)), "ci95": wilson(int(sum(correct)), len(correct))},
        # Per object, against chance: an object is drawn in its slot; 1 in 5 shapes; 1 in 6 colours.
        "objects": objects,
        **{f"object_{key}": {"rate": float(np.mean(values)), "ci95": wilson(int(sum(values)), objects)}
           for key, values in per_object.items()},
        "alignment_accuracy": mean_interval(alignment),
        "texture_fidelity": mean_interval(fidelity),
    }


def evaluation_captions(count: int) -> list[str]:
    rows = [json.loads(line) for line in (Path(__file__).parents[1] / "data/prompts/toy/toy-eval.jsonl").open()]
    return [row["prompt"] for row in rows[:count]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    oracle_parser = commands.add_parser("oracle")
    oracle_parser.add_argument("--scenes", type=int, default=300)
    oracle_parser.add_argument("--vae", type=Path, default=MODELS["toy-sd"] / "vae")
    models_parser = commands.add_parser("models")
    models_parser.add_argument("--prompts", type=int, default=100)
    models_parser.add_argument("--out", type=Path, help="write the figures here; entries of other models there are kept")
    models_parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                               help="score this pipeline folder under NAME instead of the shipped ones (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "oracle":
        figures = oracle_figures(args.scenes, vae_dir=args.vae if args.vae.exists() else None)
    else:
        models = dict(MODELS)
        if args.model:
            if not all("=" in spec for spec in args.model):
                parser.error("--model takes NAME=PATH")
            models = {name: Path(path) for name, path in (spec.split("=", 1) for spec in args.model)}
        captions = evaluation_captions(args.prompts)
        figures = {name: model_figures(path, captions) for name, path in models.items()}
        if args.out and args.out.exists():
            figures = {**json.loads(args.out.read_text()), **figures}
    text = json.dumps(figures, indent=2)
    if getattr(args, "out", None):
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
