"""Captioned procedural scenes: 1 to 3 textured shapes on a textured background.

A scene is fully determined by its caption. ``parse_caption(caption)`` recovers the scene and
``render(scene)`` draws it, so the ground truth of any prompt is ``render(parse_caption(p))``:
the oracle compares generated images against it, and the training sets are renders of it.

The grammar, one object clause per object, in layout order::

    a big red striped star on the left and a small blue circle on the right, on a noisy background

- shapes: circle, square, triangle, star, ring (distinct within a scene, so "the star" is one);
- colours: red, yellow, green, blue, purple, cyan (saturated and at least 40° of hue apart;
  backgrounds are grey, so the saturation of a pixel separates objects from background);
- object textures: solid (no word), striped, checkered, dotted, each with a 4-pixel period;
- sizes: big, small; layouts: one object in the centre, two left/right or top/bottom, three
  left/centre/right;
- backgrounds: plain, noisy (fine per-pixel noise), striped (diagonal), checkered.

The textures sit at 2 to 4 pixels, under the 8-pixel cell of an 8×-downsampling VAE: exactly
the high-frequency detail a latent-only objective loses.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

RESOLUTION = 64
SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star", "ring")
COLOURS = {  # name -> RGB in [0, 1]
    "red": (0.90, 0.12, 0.10),
    "yellow": (0.92, 0.86, 0.08),
    "green": (0.12, 0.72, 0.18),
    "blue": (0.12, 0.28, 0.92),
    "purple": (0.62, 0.16, 0.85),
    "cyan": (0.08, 0.78, 0.85),
}
TEXTURES = ("solid", "striped", "checkered", "dotted")
SIZES = ("big", "small")
BACKGROUNDS = ("plain", "noisy", "striped", "checkered")
LAYOUTS = {1: (("center",),), 2: (("left", "right"), ("top", "bottom")), 3: (("left", "center", "right"),)}
POSITION_PHRASES = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
# Object radius in pixels at 64 px, by number of objects and size word.
# No object is narrower than two 8-pixel latent cells: smaller shapes an 8× VAE cannot keep.
RADIUS = {1: {"big": 22.0, "small": 13.0}, 2: {"big": 14.0, "small": 10.0}, 3: {"big": 10.0, "small": 8.0}}
# Centres (x, y) in pixels at 64 px, by layout position and number of objects.
CENTRES = {
    1: {"center": (32.0, 32.0)},
    2: {"left": (17.0, 32.0), "right": (47.0, 32.0), "top": (32.0, 17.0), "bottom": (32.0, 47.0)},
    3: {"left": (11.0, 32.0), "center": (32.0, 32.0), "right": (53.0, 32.0)},
}
BACKGROUND_GREY = 0.55
SHADE = 0.42  # the darker tone of a textured object, as a fraction of its colour


class CaptionError(ValueError):
    """A caption that the toy world's grammar does not produce."""


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    texture: str
    size: str
    position: str

    def phrase(self) -> str:
        words = ["a", self.size, self.colour] + ([] if self.texture == "solid" else [self.texture]) + [self.shape]
        return " ".join(words) + " " + POSITION_PHRASES[self.position]


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str

    @property
    def caption(self) -> str:
        return " and ".join(o.phrase() for o in self.objects) + f", on a {self.background} background"

    def object(self, shape: str) -> SceneObject:
        for obj in self.objects:
            if obj.shape == shape:
                return obj
        raise KeyError(shape)


def caption_seed(caption: str) -> int:
    """The seed of a caption's random detail (the noisy background): stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(caption.encode()).digest()[:8], "little")


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: 1, 2 or 3 objects (weights 3:4:3), every attribute uniform."""
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    layouts = LAYOUTS[count]
    layout = layouts[int(rng.integers(len(layouts)))]
    shapes = rng.choice(len(SHAPES), size=count, replace=False)
    colour_names = list(COLOURS)
    objects = tuple(
        SceneObject(
            shape=SHAPES[int(s)],
            colour=colour_names[int(rng.integers(len(colour_names)))],
            texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
            size=SIZES[int(rng.integers(len(SIZES)))],
            position=position,
        )
        for s, position in zip(shapes, layout)
    )
    return Scene(objects=objects, background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])


_CLAUSE = re.compile(
    r"^a (?P<size>\w+) (?P<colour>\w+) (?:(?P<texture>striped|checkered|dotted) )?(?P<shape>\w+) "
    r"(?P<position>in the center|on the left|on the right|at the top|at the bottom)$"
)
_POSITION_OF_PHRASE = {phrase: position for position, phrase in POSITION_PHRASES.items()}


def parse_caption(caption: str) -> Scene:
    """The scene a toy caption describes; ``CaptionError`` for any other text."""
    body, sep, tail = caption.strip().rpartition(", on a ")
    if not sep or not tail.endswith(" background"):
        raise CaptionError(f"not a toy-world caption (no ', on a … background'): {caption!r}")
    background = tail[: -len(" background")]
    if background not in BACKGROUNDS:
        raise CaptionError(f"unknown background {background!r} in {caption!r}")
    objects = []
    for clause in body.split(" and "):
        match = _CLAUSE.match(clause)
        if match is None:
            raise CaptionError(f"cannot read the object {clause!r} in {caption!r}")
        fields = match.groupdict()
        if fields["size"] not in SIZES or fields["colour"] not in COLOURS or fields["shape"] not in SHAPES:
            raise CaptionError(f"unknown size, colour or shape in {clause!r}")
        objects.append(SceneObject(
            shape=fields["shape"], colour=fields["colour"], texture=fields["texture"] or "solid",
            size=fields["size"], position=_POSITION_OF_PHRASE[fields["position"]],
        ))
    layout = tuple(o.position for o in objects)
    if layout not in LAYOUTS.get(len(objects), ()):
        raise CaptionError(f"positions {', '.join(layout)} are not a toy-world layout in {caption!r}")
    if len({o.shape for o in objects}) != len(objects):
        raise CaptionError(f"a shape appears twice in {caption!r}")
    scene = Scene(objects=tuple(objects), background=background)
    if scene.caption != caption.strip():
        raise CaptionError(f"not in the toy world's canonical form: {caption!r}")
    return scene


# --------------------------------------------------------------------------------------
# Rendering


def shape_mask(shape: str, centre: tuple[float, float], radius: float, resolution: int = RESOLUTION) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape, ``[resolution, resolution]`` float32."""
    n = resolution * SUPERSAMPLE
    scale = resolution / RESOLUTION
    coords = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE / scale
    x, y = np.meshgrid(coords, coords)
    u = (x - centre[0]) / radius
    v = (y - centre[1]) / radius
    rho = np.hypot(u, v)
    if shape == "circle":
        inside = rho <= 1.0
    elif shape == "ring":
        inside = (rho <= 1.0) & (rho >= 0.55)
    elif shape == "square":
        inside = np.maximum(np.abs(u), np.abs(v)) <= 0.82
    elif shape == "triangle":
        # Upward equilateral triangle inscribed in the unit circle (y grows downward).
        inside = (v <= 0.5) & (v >= -1.0 + np.sqrt(3.0) * np.abs(u))
    elif shape == "star":
        theta = np.arctan2(u, -v)  # 0 at the top point
        sector = np.mod(theta, 2 * np.pi / 5) / (2 * np.pi / 5)  # 0..1 between two points
        tri = np.abs(sector - 0.5) * 2.0  # 1 at a point, 0 between points
        inside = rho <= 0.42 + 0.58 * tri**1.5
    else:
        raise ValueError(f"unknown shape {shape!r}")
    cover = inside.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE).mean(axis=(1, 3))
    return cover.astype(np.float32)


def texture_pattern(texture: str, resolution: int = RESOLUTION) -> np.ndarray:
    """1 where a texture shows the object's colour, 0 where its darker tone, ``[R, R]``."""
    y, x = np.mgrid[0:resolution, 0:resolution]
    if texture == "solid":
        return np.ones((resolution, resolution), np.float32)
    if texture == "striped":
        return ((y // 2) % 2 == 0).astype(np.float32)
    if texture == "checkered":
        return (((x // 2) + (y // 2)) % 2 == 0).astype(np.float32)
    if texture == "dotted":
        # 2×2 dark dots on a 4-pixel grid.
        return 1.0 - (((x % 4) // 2 == 0) & ((y % 4) // 2 == 0)).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


def background_image(background: str, seed: int, resolution: int = RESOLUTION) -> np.ndarray:
    """The grey background, ``[R, R, 3]`` in [0, 1]."""
    y, x = np.mgrid[0:resolution, 0:resolution]
    if background == "plain":
        grey = np.full((resolution, resolution), BACKGROUND_GREY, np.float32)
    elif background == "noisy":
        noise = np.random.default_rng(seed).normal(0.0, 0.13, size=(resolution, resolution))
        grey = (BACKGROUND_GREY + noise).astype(np.float32)
    elif background == "striped":
        grey = np.where(((x + y) // 2) % 2 == 0, BACKGROUND_GREY + 0.16, BACKGROUND_GREY - 0.16).astype(np.float32)
    elif background == "checkered":
        grey = np.where(((x // 2) + (y // 2)) % 2 == 0, BACKGROUND_GREY + 0.14, BACKGROUND_GREY - 0.14).astype(np.float32)
    else:
        raise ValueError(f"unknown background {background!r}")
    return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)


def object_geometry(obj: SceneObject, count: int) -> tuple[tuple[float, float], float]:
    """Centre and radius, in 64-px coordinates, of an object in a scene of ``count`` objects."""
    return CENTRES[count][obj.position], RADIUS[count][obj.size]


def render(scene: Scene, resolution: int = RESOLUTION) -> np.ndarray:
    """The scene as ``[R, R, 3]`` float32 in [0, 1]; deterministic given the caption."""
    image = background_image(scene.background, caption_seed(scene.caption), resolution)
    count = len(scene.objects)
    for obj in scene.objects:
        centre, radius = object_geometry(obj, count)
        alpha = shape_mask(obj.shape, centre, radius, resolution)[..., None]
        colour = np.asarray(COLOURS[obj.colour], np.float32)
        pattern = texture_pattern(obj.texture, resolution)[..., None]
        fill = colour * (SHADE + (1.0 - SHADE) * pattern)
        image = alpha * fill + (1.0 - alpha) * image
    return image.astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_png(scene: Scene, path, resolution: int = RESOLUTION) -> None:
    from PIL import Image

    Image.fromarray(to_uint8(render(scene, resolution))).save(path, format="PNG")
