"""Demo data: two placeholder model versions, procedural images for DSG-1k prompts, one round of each kind.

Nothing here needs weights or a GPU. The images are drawn with Pillow: abstract shapes tinted
by the colours a prompt names, with fine texture. One placeholder "model" draws crisp detail;
the other draws the same scene blurred and blotched, so comparisons have a right answer
that needs zooming in. Half of the seeds draw a flat, outlined "stylized" scene, so that
visual-appeal items sometimes call for "cannot compare".

Running it again changes nothing: models, images and rounds are looked up by name and key.
"""

from __future__ import annotations

import io
import random

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter

from annotation.models import Round
from annotation.services import ItemSpec, round_create
from catalog.models import Image, ModelVersion, Prompt, PromptSet
from catalog.services import PROMPT_PRESETS, image_create

SIZE = 512
SEEDS = range(5)  # five images per prompt and model: a best/worst grid
DEMO_NOTE = "Demo placeholder: no weights. Its images are procedural drawings made by `manage.py seed_demo`."
MODELS = {
    "demo-base": {"sharp": False},
    "demo-pixel-dpo": {"sharp": True},
}
ROUNDS = {
    "Demo: visual flaws": {"kind": "pairwise", "criterion": "visual_flaws"},
    "Demo: visual appeal": {"kind": "pairwise", "criterion": "visual_appeal"},
    "Demo: best and worst": {"kind": "best_worst", "criterion": ""},
    "Demo: text alignment": {"kind": "alignment", "criterion": ""},
}
COLOURS = {
    "red": (200, 40, 40), "blue": (40, 80, 200), "green": (40, 160, 70), "yellow": (235, 205, 40),
    "purple": (130, 60, 170), "orange": (240, 140, 30), "pink": (235, 130, 180), "black": (25, 25, 25),
    "white": (240, 240, 240), "brown": (120, 80, 40), "grey": (128, 128, 128), "gray": (128, 128, 128),
}


def draw_scene(*, text: str, seed: int, sharp: bool) -> bytes:
    """A 512×512 PNG for (prompt, seed); the same scene for both models, crisp or degraded."""
    rng = random.Random(f"{text}|{seed}")
    named = [rgb for word, rgb in COLOURS.items() if word in text.lower()]
    palette = named + [tuple(rng.randrange(40, 230) for _ in range(3)) for _ in range(4)]
    stylized = seed % 2 == 1
    image = PILImage.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    top, bottom = rng.choice(palette), tuple(rng.randrange(20, 120) for _ in range(3))
    if stylized:
        draw.rectangle([0, 0, SIZE, SIZE], fill=top)
    else:
        for y in range(SIZE):  # a smooth sky-to-ground gradient: the "photographic" look
            t = y / SIZE
            draw.line([(0, y), (SIZE, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randrange(6, 14)):
        colour = rng.choice(palette)
        x, y, r = rng.randrange(SIZE), rng.randrange(SIZE), rng.randrange(20, 110)
        box = [x - r, y - r, x + r, y + int(r * rng.uniform(0.5, 1.3))]
        outline = (20, 20, 20) if stylized else None
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour, outline=outline, width=4)
        else:
            draw.rounded_rectangle(box, radius=r // 4, fill=colour, outline=outline, width=4)
    # Fine detail that only survives in the sharp version: hairlines, a checker patch, speckles.
    for _ in range(40):
        x, y = rng.randrange(SIZE), rng.randrange(SIZE)
        draw.line([(x, y), (x + rng.randrange(-40, 40), y + rng.randrange(-40, 40))], fill=rng.choice(palette), width=1)
    cx, cy = rng.randrange(SIZE - 64), rng.randrange(SIZE - 64)
    for i in range(0, 64, 4):
        for j in range(0, 64, 4):
            if (i + j) // 4 % 2:
                draw.rectangle([cx + i, cy + j, cx + i + 3, cy + j + 3], fill=(250, 250, 250))
    if not stylized:
        noise = PILImage.effect_noise((SIZE, SIZE), 18).convert("RGB")
        image = PILImage.blend(image, noise, 0.06)
    if not sharp:
        image = image.filter(ImageFilter.GaussianBlur(1.6))
        blotches = ImageDraw.Draw(image)
        for _ in range(6):  # smeared artefacts: the kind of flaw the pixel loss is meant to remove
            x, y, r = rng.randrange(SIZE), rng.randrange(SIZE), rng.randrange(6, 18)
            blotches.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randrange(256) for _ in range(3)))
        image = image.filter(ImageFilter.GaussianBlur(0.6))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


class Command(BaseCommand):
    help = "Create demo model versions, procedural images for DSG-1k prompts and one open round of each kind (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--prompts", type=int, default=20, help="How many DSG-1k prompts to draw (default 20).")

    def handle(self, *args, prompts: int, **options):
        set_name = PROMPT_PRESETS["dsg1k"]["set"]
        prompt_set = PromptSet.objects.filter(name=set_name).first()
        if prompt_set is None:
            raise CommandError(f"prompt set {set_name!r} is missing: run `manage.py import_prompts --preset dsg1k` first")
        # Short prompts with a handful of questions read well on screen; the order is stable.
        chosen = list(
            Prompt.objects.filter(prompt_set=prompt_set)
            .annotate(n_questions=Count("questions"))
            .filter(n_questions__gte=2, n_questions__lte=6)
            .order_by("id")
        )
        chosen = sorted(chosen, key=lambda p: (len(p.text) > 70, p.id))[:prompts]
        if not chosen:
            raise CommandError(f"prompt set {set_name!r} has no prompts with alignment questions")

        models = {
            name: ModelVersion.objects.get_or_create(
                name=name,
                defaults={"family": "unet", "prediction_type": "epsilon", "local_path": f"demo/{name}", "notes": DEMO_NOTE},
            )[0]
            for name in MODELS
        }
        images, created = {}, 0
        for prompt in chosen:
            for name, spec in MODELS.items():
                for seed in SEEDS:
                    image, made = self._image(prompt=prompt, model=models[name], seed=seed, sharp=spec["sharp"])
                    images[(prompt.pk, name, seed)] = image
                    created += made
        self.stdout.write(f"{len(chosen)} prompts, {len(images)} images ({created} new)")
        self._rounds(chosen, images)

    def _image(self, *, prompt: Prompt, model: ModelVersion, seed: int, sharp: bool) -> tuple[Image, bool]:
        existing = Image.objects.filter(prompt=prompt, model_version=model, seed=seed).first()
        if existing:
            return existing, False
        data = draw_scene(text=prompt.text, seed=seed, sharp=sharp)
        image = image_create(
            prompt=prompt, model_version=model, seed=seed, sampler={"procedural": True, "size": SIZE}, data=data
        )
        return image, True

    @transaction.atomic
    def _rounds(self, chosen: list[Prompt], images: dict) -> None:
        base, tuned = list(MODELS)
        pairs = [
            ItemSpec(prompt_id=p.pk, image_ids=(images[(p.pk, base, s)].pk, images[(p.pk, tuned, s)].pk))
            for p in chosen for s in (0, 1)
        ]
        items = {
            "Demo: visual flaws": pairs,
            "Demo: visual appeal": pairs,
            "Demo: best and worst": [
                # The five seeds of one prompt from one model, alternating models between prompts.
                ItemSpec(prompt_id=p.pk, image_ids=tuple(images[(p.pk, (base, tuned)[n % 2], s)].pk for s in SEEDS))
                for n, p in enumerate(chosen)
            ],
            "Demo: text alignment": [
                ItemSpec(prompt_id=p.pk, image_ids=(images[(p.pk, (tuned, base)[n % 2], 0)].pk,))
                for n, p in enumerate(chosen)
            ],
        }
        for name, spec in ROUNDS.items():
            if Round.objects.filter(name=name).exists():
                self.stdout.write(f"round {name!r} exists")
                continue
            round_create(name=name, kind=spec["kind"], criterion=spec["criterion"], items=items[name], k=5)
            self.stdout.write(f"round {name!r}: {len(items[name])} items")
        self.stdout.write("Log in as an annotator and pick a round on the dashboard.")
