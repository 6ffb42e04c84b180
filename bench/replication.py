"""The CPU-scale replication of the paper's ablations on the toy models (docs/toy-replication.md).

Every number comes through the product's own commands, on embedded defaults (SQLite, the
filesystem broker) in a study folder of its own, with a `default` worker (and beat) and a `gpu`
worker started here:
- the preference pairs: ``launch_training_round`` (the base model's images, a best/worst round of
  5 images per prompt judged by ``noisy_oracle`` annotators, the export, and the first
  preference row's training and evaluation);
- every other row: ``train`` on the round's pairs (preference rows) or on a rendered set of the
  toy world's ground truth (SFT rows);
- each model against the base, and head to head: ``create_evaluation`` (the base's images are
  sampled once and reused), ``simulate_annotators --policy noisy_oracle`` (K = 5), and
  ``evaluation_report --format json``;
- the oracle's texture fidelity and alignment accuracy of the evaluation's images, per prompt.

Outputs go to ``docs/replication/<model>/<row>/seed-<n>/`` (``config.toml``, ``run.json``,
``metrics.jsonl``, ``report.json``, ``oracle.json``, and for seed 0 ``samples/``) and
head-to-head reports to ``docs/replication/<model>/h2h/<a>--<b>/seed-<n>/``. A row whose
``report.json`` exists is not run again, so the study resumes where its committed outputs end.
``--summarize`` turns them into ``docs/replication/summary.json``, ``tables.md``, the plots and the
sample grids.

    python bench/replication.py --model toy-sd                  # every row, seeds 0 1 2
    python bench/replication.py --model toy-sd --rows sft-latent-pixel --seeds 0
    python bench/replication.py --quick                         # one row per table, seed 0, toy-sd; < 15 min
    python bench/replication.py --summarize
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
OUT = REPO / "docs/replication"
WORK = REPO / "var/replication"
MODELS = ("toy-sd", "toy-pixart")

# The paper's weights of the pixel term: λ = μ = 2 for a U-Net, 8 for a DiT.
PIXEL_WEIGHT = {"toy-sd": 2.0, "toy-pixart": 8.0}
# The study's scale, the same in every row (and in --quick).
TRAIN_PROMPTS = 160  # best/worst items of 5 base images each: the preference pairs
EVAL_PROMPTS = 100   # a seeded sample of the evaluation split
SFT_IMAGES = 2000    # ground-truth renders of training captions: the curated SFT set
K = 5
NOISE = 0.2
SAMPLER = {"steps": 50, "guidance_scale": 7.5, "batch_size": 25}  # the engine's default sampler (DDIM)

COMMON = {
    "resolution": 64, "center_crop": True, "random_flip": False, "cache_latents": True,
    "lr_scheduler": "constant", "lr_warmup_steps": 10, "max_grad_norm": 1.0, "max_train_steps": 200,
    "checkpointing_steps": 200, "log_every": 10,
}
SFT = {**COMMON, "learning_rate": 2e-5, "train_batch_size": 8}
PREFERENCE = {**COMMON, "learning_rate": 2e-5, "train_batch_size": 4, "latent_beta": 2000.0, "pixel_beta": 2000.0}


@dataclass(frozen=True)
class Row:
    name: str
    table: str           # the paper's table it replicates
    label: str
    data: str            # "sft" (rendered ground truth) or "preference" (the round's pairs)
    latent: str
    pixel: str
    weight_scale: float = 1.0  # times the model's λ/μ
    extra: dict = field(default_factory=dict)
    first_seed_only: bool = False  # the cost table's rows: one seed

    def runs_at(self, seed: int) -> bool:
        return seed == 0 or not self.first_seed_only

    def config(self, model: str, seed: int) -> dict:
        base = SFT if self.data == "sft" else PREFERENCE
        config = {**base, "latent_objective": self.latent, "pixel_objective": self.pixel, "seed": seed, **self.extra}
        if self.pixel != "none":
            config["pixel_weight"] = PIXEL_WEIGHT[model] * self.weight_scale
        return config


ROWS = [
    Row("sft-latent", "1, 2", "SFT, latent only", "sft", "sft", "none"),
    Row("sft-latent-pixel", "1, 2", "SFT, latent + pixel", "sft", "sft", "sft"),
    Row("sft-pixel", "5", "SFT, pixel only", "sft", "none", "sft"),
    Row("sft-latent-pixel-4x", "5", "SFT, latent + pixel, 4× the weight", "sft", "sft", "sft", 4.0),
    Row("sft-latent-pixel-quarter", "5", "SFT, latent + pixel, ¼ the weight", "sft", "sft", "sft", 0.25),
    Row("sft-latent-pixel-x0", "decoding", "SFT, latent + pixel, x0 decoding (eq. 8)", "sft", "sft", "sft",
        extra={"pixel_decoding": "x0"}),
    Row("simpo-latent-pixel", "3, 4", "SimPO, latent + pixel", "preference", "simpo", "simpo"),
    Row("simpo-latent", "3, 4", "SimPO, latent only", "preference", "simpo", "none"),
    Row("dpo-latent", "3, 4", "DPO, latent only", "preference", "dpo", "none"),
    Row("dpo-latent-pixel", "3, 4", "DPO, latent + pixel", "preference", "dpo", "dpo"),
    Row("dpo-latent-simpo-pixel", "6", "DPO latent + SimPO pixel", "preference", "dpo", "simpo"),
    Row("simpo-latent-dpo-pixel", "6", "SimPO latent + DPO pixel", "preference", "simpo", "dpo"),
    Row("sft-latent-pixel-crop50", "cost", "SFT, latent + pixel, pixel_crop 0.5", "sft", "sft", "sft",
        extra={"pixel_crop": 0.5}, first_seed_only=True),
    Row("sft-latent-pixel-crop25", "cost", "SFT, latent + pixel, pixel_crop 0.25", "sft", "sft", "sft",
        extra={"pixel_crop": 0.25}, first_seed_only=True),
    Row("sft-latent-pixel-tiny", "cost", "SFT, latent + pixel, tiny decoder", "sft", "sft", "sft",
        extra={"pixel_decoder": "toyworld/weights/toy-tiny-decoder"}, first_seed_only=True),
]
# The cost table's rows: mode -> the row that trained with it (decoder checkpointing computes the same gradient as
# the full term, to a cosine of 1.000, so its quality is the full term's).
COST_ROWS = {"full pixel term": "sft-latent-pixel", "pixel_crop 0.5": "sft-latent-pixel-crop50",
             "pixel_crop 0.25": "sft-latent-pixel-crop25", "tiny decoder": "sft-latent-pixel-tiny",
             "decoder checkpointing": "sft-latent-pixel", "latent only": "sft-latent"}
ROW = {row.name: row for row in ROWS}
# The round that makes the preference pairs trains this row (seed 0) as its own training stage.
ROUND_ROW = "simpo-latent-pixel"
# --quick: one row of each of the paper's tables the study replicates (1–2, 3–4, 5, 6) and of the decoding ablation.
QUICK_ROWS = ("sft-latent-pixel", "simpo-latent-pixel", "sft-pixel", "dpo-latent-simpo-pixel", "sft-latent-pixel-x0")
# Head to head, as the paper compares: (a, b) evaluates a against b, seed by seed.
HEAD_TO_HEAD = [
    ("sft-latent-pixel", "sft-latent"),
    ("simpo-latent-pixel", "dpo-latent"),
    ("simpo-latent-pixel", "simpo-latent"),
    ("dpo-latent-pixel", "dpo-latent"),
]
SAMPLES = 8  # evaluation images of seed 0 kept per row, for the sample grids


class StudyError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Study:
    """One toy model's study: its own VAR_DIR (database, media, runs), workers and outputs."""

    def __init__(self, model: str, *, work: Path, out: Path):
        self.model, self.out = model, out / model
        self.var = work / model
        self.var.mkdir(parents=True, exist_ok=True)
        self.env = {
            key: value for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER")
        }
        self.env.update({
            "VAR_DIR": str(self.var), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "EVALUATION_SAMPLER": json.dumps(SAMPLER), "PYTHONPATH": str(REPO),
        })
        self.workers: list[subprocess.Popen] = []
        self._orm_ready = False

    # --- the product's commands -------------------------------------------------------------

    def manage(self, *argv: str, timeout: float = 3600) -> str:
        started = time.time()
        done = subprocess.run(
            [PYTHON, "manage.py", *argv], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise StudyError(f"manage.py {' '.join(argv[:3])} … exited {done.returncode}: {' | '.join(tail)}")
        log(f"{self.model}: manage.py {argv[0]} ({time.time() - started:.0f} s)")
        return done.stdout

    def start_workers(self) -> None:
        celery = str(Path(PYTHON).with_name("celery"))
        for queue, extra in (("default", ["-B", "-s", str(self.var / "celerybeat-schedule")]), ("gpu", [])):
            log_file = (self.var / f"worker-{queue}.log").open("a")
            self.workers.append(subprocess.Popen(
                [celery, "-A", "config", "worker", "-Q", queue, "-P", "solo", "-n", f"{queue}-{self.model}@%h",
                 "--loglevel", "INFO", *extra],
                cwd=REPO, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            ))

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        self.workers = []

    def orm(self):
        """Django in this process, on the study's database (read-only use: lookups and waits)."""
        if not self._orm_ready:
            os.environ.update(self.env)
            for key in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
                os.environ.pop(key, None)
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
            sys.path.insert(0, str(REPO))
            import django

            django.setup()
            self._orm_ready = True

    def setup(self) -> None:
        self.manage("migrate", "-v0")
        marker = self.var / ".setup-done"
        if not marker.exists():
            self.manage("import_prompts", "--preset", "toy")
            self.manage("register_model", str(REPO / "toyworld/weights" / self.model), "--name", self.model)
            marker.write_text("ok\n")

    def sft_data(self) -> Path:
        folder = self.var.parent / "sft-data"  # the same renders for both models
        if not (folder / "metadata.jsonl").exists():
            from toyworld.recipes.denoiser import render_training_set

            render_training_set(folder, images=SFT_IMAGES, seed=1)  # seed 1: other captions than the base's recipe
            log(f"rendered {SFT_IMAGES} SFT images to {folder}")
        return folder

    # --- rows -----------------------------------------------------------------------------

    def run_name(self, row: str, seed: int) -> str:
        return f"{self.model}-{row}-s{seed}"

    def preference_data(self) -> Path:
        """The round's exported pairs; the round trains ROUND_ROW at seed 0 on the way."""
        self.orm()
        from training.models import TrainingRound

        name = self.run_name(ROUND_ROW, 0)
        found = TrainingRound.objects.filter(name=name).first()
        if found is None or not found.dataset_path:
            row = ROW[ROUND_ROW]
            config = self.write_config(row, 0, self.var / "round-config.toml")
            self.manage(
                "launch_training_round", "--base", self.model, "--prompts", "toy-train", "--limit", str(TRAIN_PROMPTS),
                "--images-per-prompt", "5", "--k", str(K), "--method", row.latent,
                "--pixel-weight", str(PIXEL_WEIGHT[self.model]), "--config", str(config),
                "--simulate-annotators", "noisy_oracle",  # the policy's default noise, NOISE
                "--evaluate-on", "toy-eval", "--evaluate-limit", str(EVAL_PROMPTS), "--name", name, "--wait",
                timeout=7200,
            )
            found = TrainingRound.objects.get(name=name)
        if found.stage not in ("done", "evaluating"):
            raise StudyError(f"training round {name} is {found.stage}: {found.error}")
        return Path(found.dataset_path)

    def write_config(self, row: Row, seed: int, path: Path) -> Path:
        config = row.config(self.model, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{key} = {_toml(value)}\n" for key, value in config.items()), encoding="utf-8")
        return path

    def run_row(self, row: Row, seed: int) -> None:
        out = self.out / row.name / f"seed-{seed}"
        if (out / "report.json").exists():
            log(f"{self.model}: {row.name} seed {seed}: done already")
            return
        started = time.time()
        run, data = self.trained(row, seed, out)
        trained = time.time()
        report = self.evaluate(run.name, self.model, seed, out)
        self.record_run(run, out, data, trained - started, time.time() - trained)
        if seed == 0:
            self.keep_samples(report["evaluation"], run.name, out / "samples")
            self.keep_samples(report["evaluation"], self.model, self.out / "base" / "samples")
        self.ceiling(report["evaluation"])

    def trained(self, row: Row, seed: int, out: Path):
        """The row's training run at ``seed``, trained here (with ``train``) if this study folder lacks it."""
        name = self.run_name(row.name, seed)
        config = self.write_config(row, seed, out / "config.toml")
        self.orm()
        from training.models import TrainingRun

        if row.data == "preference":
            data = self.preference_data()
        else:
            data = self.sft_data()
        if not TrainingRun.objects.filter(name=name).exists():
            self.manage("train", "--base", self.model, "--data", str(data), "--config", str(config), "--name", name,
                        "--wait", timeout=7200)
        run = TrainingRun.objects.get(name=name)
        while run.status in ("queued", "running"):  # a run an interrupted study left behind: its worker goes on
            time.sleep(5)
            run.refresh_from_db()
        if run.status != "succeeded":
            raise StudyError(f"run {name} {run.status}: {run.error}")
        return run, data

    def ceiling(self, evaluation_id: int) -> None:
        """What the frozen decoder allows: the oracle on the evaluation captions' ground-truth renders passed
        through the toy VAE (encode, decode). The pixel term's target is a decode too, so no denoiser beats it."""
        path = self.out / "base" / "vae-ceiling.json"
        if path.exists():
            return
        import torch
        from diffusers import AutoencoderKL

        from evaluation.models import EvaluationRound
        from toyworld import oracle
        from toyworld.quality import degrade, mean_interval
        from toyworld.scenes import parse_caption, render

        vae = AutoencoderKL.from_pretrained(REPO / "toyworld/weights" / self.model / "vae", torch_dtype=torch.float32)
        evaluation = EvaluationRound.objects.get(pk=evaluation_id)
        texts = sorted(set(evaluation.jobs.values_list("prompt__text", flat=True)))
        views = {"render": [], "vae": []}
        for text in texts:
            clean = render(parse_caption(text))
            views["render"].append(oracle.judge(degrade(clean, "clean"), text))
            views["vae"].append(oracle.judge(degrade(clean, "vae", vae.eval()), text))
        figures = {"prompts": len(texts)}
        for kind, judged in views.items():
            figures[kind] = {"fidelity": mean_interval([v.fidelity for v in judged]),
                             "alignment": mean_interval([v.alignment for v in judged])}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")

    def evaluate(self, a: str, b: str, seed: int, out: Path) -> dict:
        """``a`` against ``b`` on the evaluation sample: judged, reported, and scored by the oracle."""
        self.orm()
        from evaluation.models import EvaluationRound

        name = f"{a} vs {b}"
        evaluation = EvaluationRound.objects.filter(name=name).first()
        if evaluation is None:
            self.manage("create_evaluation", "--models", a, b, "--prompts", "toy-eval", "--limit", str(EVAL_PROMPTS),
                        "--seed", "0", "--k", str(K), "--name", name)
            evaluation = EvaluationRound.objects.get(name=name)
        deadline = time.time() + 3600
        while not evaluation.annotation_rounds.exists():
            if time.time() > deadline:
                raise StudyError(f"evaluation {name}: its images did not finish within an hour")
            time.sleep(3)
        rounds = [str(r.pk) for r in evaluation.annotation_rounds.order_by("pk")]
        self.manage("simulate_annotators", *rounds, "--policy", "noisy_oracle", "--noise", str(NOISE),
                    "--annotators", str(K), "--seed", str(seed), "--prefix", "oracle")
        out.mkdir(parents=True, exist_ok=True)
        self.manage("evaluation_report", str(evaluation.pk), "--format", "json", "--out", str(out / "report.json.tmp"))
        figures = self.oracle_figures(evaluation, a, b)
        (out / "oracle.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        (out / "report.json.tmp").rename(out / "report.json")  # last: its presence marks the row done
        return {"evaluation": evaluation.pk}

    def oracle_figures(self, evaluation, a: str, b: str) -> dict:
        """Texture fidelity and alignment accuracy of each model's evaluation images, and a's paired difference."""
        import numpy as np
        from PIL import Image

        from toyworld import oracle
        from toyworld.quality import mean_interval

        per_model: dict[str, dict[str, dict]] = {a: {}, b: {}}
        for job in evaluation.jobs.select_related("prompt", "image", "model_version").order_by("prompt__external_id"):
            with job.image.file.open("rb") as handle:
                pixels = np.asarray(Image.open(handle).convert("RGB"))
            view = oracle.judge(pixels, job.prompt.text)
            per_model[job.model_version.name][job.prompt.external_id] = {
                "fidelity": float(view.fidelity), "alignment": float(view.alignment),
            }
        prompts = sorted(set(per_model[a]) & set(per_model[b]))
        figures = {"prompts": len(prompts)}
        for model in (a, b):
            figures[model] = {
                measure: mean_interval([per_model[model][p][measure] for p in prompts])
                for measure in ("fidelity", "alignment")
            }
        figures["difference"] = {
            measure: mean_interval([per_model[a][p][measure] - per_model[b][p][measure] for p in prompts])
            for measure in ("fidelity", "alignment")
        }
        figures["per_prompt"] = {p: {m: per_model[m][p] for m in (a, b)} for p in prompts}
        return figures

    def record_run(self, run, out: Path, data: Path, train_s: float, evaluate_s: float) -> None:
        lines = []
        metrics_file = Path(run.output_dir) / "metrics.jsonl"
        if metrics_file.exists():
            lines = [line for line in metrics_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        step_times = [json.loads(line).get("step_time") for line in lines]
        step_times = [t for t in step_times if isinstance(t, (int, float))]
        record = {
            "run": run.name, "base": self.model, "data": str(data.relative_to(self.var.parent))
            if data.is_relative_to(self.var.parent) else data.name,
            "final_metrics": run.metrics, "steps": run.step,
            "step_time_median_s": sorted(step_times)[len(step_times) // 2] if step_times else None,
            "wall_s": {"train_and_register": round(train_s, 1), "evaluate": round(evaluate_s, 1)},
        }
        (out / "run.json").write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")

    def keep_samples(self, evaluation_id: int, model: str, folder: Path) -> None:
        if folder.exists():
            return
        from evaluation.models import EvaluationRound

        evaluation = EvaluationRound.objects.get(pk=evaluation_id)
        folder.mkdir(parents=True)
        jobs = evaluation.jobs.filter(model_version__name=model).select_related("prompt", "image")
        captions = {}
        for job in jobs.order_by("prompt__external_id")[:SAMPLES]:
            with job.image.file.open("rb") as handle:
                (folder / f"{job.prompt.external_id}.png").write_bytes(handle.read())
            captions[job.prompt.external_id] = job.prompt.text
        (folder / "captions.json").write_text(json.dumps(captions, indent=1) + "\n", encoding="utf-8")

    def probe(self, seeds: list[int]) -> None:
        """Held-out errors of the base and of every row with a committed report: the mechanism, below what the
        oracle sees. A row this study folder has not trained (a new machine) is trained again from its committed
        config (same seed, same data), and not evaluated again."""
        self.setup()
        self.orm()
        from catalog.models import ModelVersion, Prompt

        done = [
            (row, int(folder.name.split("-")[1]), folder)
            for row in ROWS for folder in sorted((self.out / row.name).glob("seed-*"))
            if (folder / "report.json").exists() and int(folder.name.split("-")[1]) in seeds
        ]
        if not done:
            return
        # The evaluation sample's captions, as the committed reports name them (every row shares the sample).
        prompt_ids = sorted(json.loads((done[0][2] / "oracle.json").read_text(encoding="utf-8"))["per_prompt"])
        texts = dict(Prompt.objects.filter(prompt_set__name="toy-eval", external_id__in=prompt_ids)
                     .values_list("external_id", "text"))
        captions = sorted(texts[p] for p in prompt_ids)
        targets = [(self.model, self.out / "base")]
        missing = [(row, seed, folder) for row, seed, folder in done if not (folder / "probe.json").exists()]
        if missing:
            self.start_workers()
            try:
                for row, seed, folder in sorted(missing, key=lambda m: (m[0].data == "preference", m[1])):
                    scratch = self.var / "probe-configs" / row.name / f"seed-{seed}"
                    run, _ = self.trained(row, seed, scratch)
                    if (scratch / "config.toml").read_text() != (folder / "config.toml").read_text():
                        raise StudyError(f"{row.name} seed {seed}: config differs from the committed one")
                    targets.append((run.name, folder))
            finally:
                self.stop_workers()
        for name, folder in targets:
            if (folder / "probe.json").exists():
                continue
            model = ModelVersion.objects.filter(name=name).first()
            if model is None:
                raise StudyError(f"probe: no model {name} in {self.var}")
            started = time.time()
            figures = held_out_errors(Path(model.local_path), captions)
            (folder / "probe.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
            log(f"{self.model}: probe {name} ({time.time() - started:.0f} s)")

    def head_to_head(self, a: str, b: str, seed: int) -> None:
        out = self.out / "h2h" / f"{a}--{b}" / f"seed-{seed}"
        if (out / "report.json").exists():
            return
        if not all((self.out / row / f"seed-{seed}" / "report.json").exists() for row in (a, b)):
            return
        self.evaluate(self.run_name(a, seed), self.run_name(b, seed), seed, out)


PROBE_DRAWS = 4  # noise draws per caption, the same for every model


def held_out_errors(model_dir: Path, captions: list[str]) -> dict:
    """The training objective's own errors on the evaluation captions' ground-truth renders, never trained on:
    the latent error ‖ε̂ − ε‖², the pixel error of eq. 2 (D(z_t) vs D(ẑ_t)) and of eq. 8 (D(z) vs D(ẑ₀)), each a
    mean over captions and PROBE_DRAWS draws of noise and timestep that are the same for every model."""
    import numpy as np
    import torch

    from toyworld.scenes import parse_caption, render
    from training.engine.config import TrainConfig
    from training.engine.families import load_adapter
    from training.engine.loop import LossContext, compute_loss

    torch.set_num_threads(1)
    adapter = load_adapter(model_dir)
    for module in (adapter.vae, adapter.denoiser, *adapter.text_encoders()):
        module.to(torch.float32).eval()  # as training holds them (the exports are fp16)
    pixels = torch.from_numpy(np.stack([render(parse_caption(c)) for c in captions])).permute(0, 3, 1, 2) * 2 - 1
    figures = {}
    for decoding in ("eps", "x0"):
        config = TrainConfig(pretrained_model=str(model_dir), output_dir="unused", train_data="unused",
                             resolution=64, latent_objective="sft", pixel_objective="sft", pixel_weight=1.0,
                             pixel_decoding=decoding)
        context = LossContext(adapter=adapter, config=config, device=torch.device("cpu"))
        latent, pixel = [], []
        with torch.no_grad():
            for draw in range(PROBE_DRAWS):
                for start in range(0, len(captions), 25):
                    batch = {"pixel_values": pixels[start:start + 25], "caption": captions[start:start + 25]}
                    generator = torch.Generator().manual_seed(1000 * draw + start)
                    _, metrics = compute_loss(context, adapter.denoiser, batch, generator)
                    latent.append(float(metrics["latent_loss"]))
                    pixel.append(float(metrics["pixel_loss"]))
        figures["latent_mse"] = statistics.fmean(latent)
        figures[f"pixel_mse_{decoding}"] = statistics.fmean(pixel)
    figures["captions"], figures["draws"] = len(captions), PROBE_DRAWS
    return figures


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def run_study(model: str, rows: list[str], seeds: list[int], *, work: Path, out: Path) -> None:
    study = Study(model, work=work, out=out)
    study.setup()
    study.start_workers()
    try:
        ordered = sorted(rows, key=lambda r: (r != ROUND_ROW and ROW[r].data == "preference", rows.index(r)))
        for seed in seeds:
            for row in ordered:
                if ROW[row].runs_at(seed):
                    log(f"{model}: {row} seed {seed}")
                    study.run_row(ROW[row], seed)
            for a, b in HEAD_TO_HEAD:
                if a in rows and b in rows:
                    study.head_to_head(a, b, seed)
    finally:
        study.stop_workers()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, action="append")
    parser.add_argument("--rows", nargs="+", choices=sorted(ROW), help="rows to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true",
                        help=f"rows {', '.join(QUICK_ROWS)} at seed 0 on toy-sd, into a scratch folder, "
                             "then compare them with the committed rows")
    parser.add_argument("--work", type=Path, default=WORK, help="study folders (databases, media, runs)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summarize", action="store_true", help="only turn the committed outputs into tables")
    parser.add_argument("--probe", action="store_true",
                        help="only measure the held-out errors of the base and every trained row (probe.json)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "bench"))
    import replication_summary

    if args.summarize:
        replication_summary.summarize(args.out)
        return 0
    if args.quick:
        scratch = args.work / "quick"
        if scratch.exists():
            shutil.rmtree(scratch)
        quick_out = scratch / "out"
        started = time.time()
        run_study("toy-sd", list(QUICK_ROWS), [0], work=scratch, out=quick_out)
        log(f"quick mode: {time.time() - started:.0f} s")
        return replication_summary.compare_quick(quick_out, args.out, "toy-sd", QUICK_ROWS)
    rows = args.rows or [row.name for row in ROWS]
    for model in args.model or MODELS:
        if args.probe:
            Study(model, work=args.work, out=args.out).probe(args.seeds)
        else:
            run_study(model, rows, args.seeds, work=args.work, out=args.out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
