"""The pixel oracle: answers a toy caption's questions and scores texture fidelity from pixels.

It reads only the image and the caption (the prompt an annotator would see). The caption says
which layout the scene has, so the oracle knows where objects can be; everything about what is
there comes from the pixels:

- **Objects.** Backgrounds are grey and objects saturated, so a pixel's saturation
  (max − min of its channels) separates them. In each layout slot the saturation, relative to
  the blob's own, is matched against the five shapes at both sizes, each softened by a 3×3 box
  (soft IoU), so that a blurred outline still matches its shape; the best match gives shape and
  size, or "nothing" when no template overlaps by half.
- **Colour.** The hue of the blob's mean colour, nearest of the six named hues (a textured
  fill mixes one hue at two brightnesses, so the mean keeps the hue).
- **Texture.** Inside the blob, the relative brightness at the three 4-pixel frequencies:
  (0, ¼) for stripes, (¼, ±¼) for checks, (¼, 0) with (0, ¼) for dots; below a floor of
  total power the fill is solid.
- **Background.** Outside the objects: its variance (plain or not), and whether that variance
  sits at (¼, ¼) alone (stripes), at both diagonals (checks), or nowhere (noise).
- **Texture fidelity.** For each region of the ground-truth render (every object and the
  background), the energy of a 3×3 high-pass of the luminance in the image over that in the
  render, ``r``; a region scores ``min(r, 1/r)`` (losing detail and inventing it both cost),
  and regions are weighted by the render's energy. 1.0 is the render itself; a blurred image
  tends to 0.

``docs/toyworld.md`` reports how often the answers are right on held-out renders and how the
fidelity ranks degraded renders; ``tests/toyworld`` checks both.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from toyworld.questions import Question, scene_questions
from toyworld.scenes import (
    CENTRES, COLOURS, RADIUS, RESOLUTION, SHAPES, SIZES, Scene, object_geometry, parse_caption, render,
    shape_mask,
)

SATURATION_THRESHOLD = 0.15
MIN_IOU = 0.5
SOLID_POWER = 0.004  # total relative power at the texture frequencies below which a fill is solid
PLAIN_VARIANCE = 0.002
TEXTURE_PROTOTYPES = {  # share of power at (¼,0), (0,¼), (¼,¼), (¼,−¼)
    "striped": np.array([0.0, 1.0, 0.0, 0.0]),
    "checkered": np.array([0.0, 0.0, 0.5, 0.5]),
    "dotted": np.array([0.42, 0.42, 0.08, 0.08]),
}
_HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] for name, rgb in COLOURS.items()}
_FREQUENCIES = ((0.25, 0.0), (0.0, 0.25), (0.25, 0.25), (0.25, -0.25))


@dataclass(frozen=True)
class Blob:
    """What the oracle sees in one slot of the layout."""

    shape: str | None
    size: str | None
    colour: str | None
    texture: str | None
    iou: float


def _as_float(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if array.shape != (RESOLUTION, RESOLUTION, 3):
        raise ValueError(f"the oracle reads {RESOLUTION}×{RESOLUTION} RGB images, got shape {array.shape}")
    return array


def _box3(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, 1, mode="edge")
    return sum(padded[i:i + x.shape[0], j:j + x.shape[1]] for i in range(3) for j in range(3)) / 9.0


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    out = mask.copy()
    for i, j in ((0, 1), (2, 1), (1, 0), (1, 2)):
        out &= padded[i:i + mask.shape[0], j:j + mask.shape[1]]
    return out


def _dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    for _ in range(steps):
        padded = np.pad(mask, 1, mode="constant", constant_values=False)
        out = mask.copy()
        for i, j in ((0, 1), (2, 1), (1, 0), (1, 2)):
            out |= padded[i:i + mask.shape[0], j:j + mask.shape[1]]
        mask = out
    return mask


@lru_cache(maxsize=None)
def _template(shape: str, count: int, position: str, size: str) -> np.ndarray:
    return shape_mask(shape, CENTRES[count][position], RADIUS[count][size])


@lru_cache(maxsize=None)
def _soft_template(shape: str, count: int, position: str, size: str) -> np.ndarray:
    """The template softened by a 3×3 box, as a slightly blurred outline looks."""
    return _box3(_template(shape, count, position, size))


@lru_cache(maxsize=None)
def _slot_windows(count: int, layout: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each slot's Voronoi cell among the layout's centres."""
    y, x = np.mgrid[0:RESOLUTION, 0:RESOLUTION] + 0.5
    distances = np.stack([np.hypot(x - CENTRES[count][p][0], y - CENTRES[count][p][1]) for p in layout])
    nearest = distances.argmin(axis=0)
    return {p: nearest == i for i, p in enumerate(layout)}


def _power(values: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Power of ``values`` (zero-mean) at the four texture frequencies, per pixel."""
    n = max(len(values), 1)
    return np.array([abs(np.sum(values * np.exp(-2j * np.pi * (fx * xs + fy * ys)))) ** 2 / n**2
                     for fx, fy in _FREQUENCIES])


def _colour_of(pixels: np.ndarray) -> str:
    hue = colorsys.rgb_to_hsv(*pixels.mean(axis=0))[0]
    return min(_HUES, key=lambda name: min(abs(hue - _HUES[name]), 1 - abs(hue - _HUES[name])))


def _texture_of(image: np.ndarray, mask: np.ndarray) -> str:
    inner = _erode(mask)
    if inner.sum() < 12:
        inner = mask
    ys, xs = np.nonzero(inner)
    brightness = image[ys, xs].max(axis=1)
    relative = brightness / max(float(brightness.mean()), 1e-3) - 1.0
    power = _power(relative, ys, xs)
    total = float(power.sum())
    if total < SOLID_POWER:
        return "solid"
    share = power / total
    return min(TEXTURE_PROTOTYPES, key=lambda name: float(np.sum((share - TEXTURE_PROTOTYPES[name]) ** 2)))


def _saturation(image: np.ndarray) -> np.ndarray:
    return _box3(image.max(axis=2) - image.min(axis=2))


def look(image, scene: Scene) -> dict[str, Blob]:
    """What is in each slot of ``scene``'s layout, read from ``image`` (``[64, 64, 3]``, uint8 or [0, 1])."""
    image = _as_float(image)
    count = len(scene.objects)
    layout = tuple(o.position for o in scene.objects)
    saturation = image.max(axis=2) - image.min(axis=2)
    saturated = _box3(saturation) > SATURATION_THRESHOLD
    blobs = {}
    for position, window in _slot_windows(count, layout).items():
        mask = saturated & window
        if not mask.any():
            blobs[position] = Blob(None, None, None, None, 0.0)
            continue
        # Shape and size: soft IoU of the saturation, relative to the blob's own, with each
        # template softened by the same 3×3 box, so that a blurred outline still matches its shape.
        soft = np.clip(saturation / max(float(np.percentile(saturation[mask], 75)), 1e-3), 0.0, 1.0) * window
        best, best_iou = None, 0.0
        for shape in SHAPES:
            for size in SIZES:
                template = _soft_template(shape, count, position, size) * window
                union = np.maximum(soft, template).sum()
                iou = float(np.minimum(soft, template).sum() / union) if union else 0.0
                if iou > best_iou:
                    best, best_iou = (shape, size), iou
        if best is None or best_iou < MIN_IOU:
            blobs[position] = Blob(None, None, None, None, best_iou)
            continue
        mask &= saturation > 0.3 * float(np.median(saturation[mask]))  # the blob's own pixels
        blobs[position] = Blob(best[0], best[1], _colour_of(image[mask]), _texture_of(image, mask), best_iou)
    return blobs


def background_of(image, scene: Scene) -> str:
    image = _as_float(image)
    count = len(scene.objects)
    objects = np.zeros((RESOLUTION, RESOLUTION), bool)
    for obj in scene.objects:
        for size in SIZES:
            objects |= _template(obj.shape, count, obj.position, size) > 0
    region = ~_dilate(objects | (_saturation(image) > SATURATION_THRESHOLD), 2)
    ys, xs = np.nonzero(region)
    grey = image[ys, xs].mean(axis=1)
    variance = float(grey.var())
    if variance < PLAIN_VARIANCE:
        return "plain"
    power = _power(grey - grey.mean(), ys, xs)
    # A ±a square wave puts ~(8/π²)/2 of its variance at each of its two conjugate peaks.
    diag_plus, diag_minus = power[2] / variance, power[3] / variance
    if diag_plus > 0.1 and diag_minus > 0.1:
        return "checkered"
    if diag_plus > 0.1:
        return "striped"
    return "noisy"


def answer_questions(image, caption: str) -> dict[int, bool]:
    """The oracle's yes/no answer to each of the caption's questions, by question number."""
    scene = parse_caption(caption)
    blobs = look(image, scene)
    answers = {}
    for question in scene_questions(scene):
        answers[question.order] = _answer(question, scene, blobs, image)
    return answers


def _answer(question: Question, scene: Scene, blobs: dict[str, Blob], image) -> bool:
    if question.attribute == "background":
        return background_of(image, scene) == question.value
    # The object asked about: where the caption put it, else anywhere it was drawn.
    stated = scene.object(question.shape).position
    found = blobs[stated] if blobs[stated].shape == question.shape else next(
        (b for b in blobs.values() if b.shape == question.shape), None)
    if question.attribute == "shape":
        return found is not None
    if question.attribute == "position":
        return blobs[question.value].shape == question.shape
    if found is None:
        return False
    return getattr(found, question.attribute) == question.value


def _luminance_highpass(image: np.ndarray) -> np.ndarray:
    luminance = image @ np.array([0.299, 0.587, 0.114], np.float32)
    return luminance - _box3(luminance)


def texture_fidelity(image, caption: str) -> float:
    """How much of the ground-truth render's high-frequency detail ``image`` keeps, in [0, 1]."""
    scene = parse_caption(caption)
    reference = render(scene)
    image = _as_float(image)
    high_image = _luminance_highpass(image) ** 2
    high_reference = _luminance_highpass(reference) ** 2
    count = len(scene.objects)
    remaining = np.ones((RESOLUTION, RESOLUTION), bool)
    regions = []
    for obj in scene.objects:
        centre, radius = object_geometry(obj, count)
        region = shape_mask(obj.shape, centre, radius) > 0.5
        regions.append(region)
        remaining &= ~region
    regions.append(remaining)
    score = weight = 0.0
    for region in regions:
        reference_energy = float(high_reference[region].sum())
        if reference_energy <= 1e-9:
            continue
        ratio = float(high_image[region].sum()) / reference_energy
        score += reference_energy * min(ratio, 1.0 / ratio if ratio > 0 else 0.0)
        weight += reference_energy
    return score / weight if weight else 1.0


def shape_and_colour_correct(image, caption: str) -> bool:
    """Every object of the caption is where it should be, with the right shape and colour."""
    scene = parse_caption(caption)
    blobs = look(image, scene)
    return all(blobs[o.position].shape == o.shape and blobs[o.position].colour == o.colour for o in scene.objects)


# What the simulated annotators weigh (annotation.simulation's noisy_oracle policy):
# visual flaws by texture fidelity alone; visual appeal by this mix of fidelity and alignment.
APPEAL_FIDELITY_WEIGHT = 0.5


@dataclass(frozen=True)
class Judgement:
    """The oracle's view of one image of a caption."""

    fidelity: float
    alignment: float
    answers: dict[int, bool]

    @property
    def appeal(self) -> float:
        return APPEAL_FIDELITY_WEIGHT * self.fidelity + (1.0 - APPEAL_FIDELITY_WEIGHT) * self.alignment


def judge(image, caption: str) -> Judgement:
    """Fidelity, alignment accuracy and per-question answers of ``image`` for ``caption``."""
    answers = answer_questions(image, caption)
    return Judgement(
        fidelity=texture_fidelity(image, caption),
        alignment=sum(answers.values()) / len(answers),
        answers=answers,
    )
