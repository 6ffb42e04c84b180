"""Tables, plots and sample grids of the replication study, from its committed outputs.

``bench/replication.py --summarize`` calls ``summarize``: it reads
``docs/replication/<model>/<row>/seed-<n>/{report,oracle,run}.json`` and writes
``docs/replication/summary.json`` (every figure the write-up quotes), ``tables.md``, the plots in
``plots/`` and the grids in ``grids/``. ``compare_quick`` checks a ``--quick`` rerun against them.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from replication import COST_ROWS, EVAL_PROMPTS, HEAD_TO_HEAD, K, MODELS, NOISE, PIXEL_WEIGHT, ROW, ROWS, TRAIN_PROMPTS

CRITERIA = (("visual_flaws", "Visual flaws"), ("visual_appeal", "Visual appeal"))
# Reported in the paper, for the rows it has (win / tie / loss % against the base; DiT unless said).
PAPER = {
    ("sft-latent-pixel", "visual_flaws"): "64.2 % win (DiT)",
    ("sft-latent", "visual_flaws"): "17.7 % win (DiT)",
    ("simpo-latent-pixel", "visual_appeal"): "61.2 % win (DiT)",
    ("dpo-latent", "visual_appeal"): "48.3 % win (DiT)",
}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def seed_figures(folder: Path) -> dict | None:
    """One seed's figures: win/tie/loss of each criterion with Wilson CIs and Holm-adjusted p, the
    alignment difference with McNemar's p, the oracle's paired differences, and the step time."""
    report, oracle, run = (_load(folder / f"{name}.json") for name in ("report", "oracle", "run"))
    if report is None or oracle is None:
        return None
    row = report["table"][0]
    figures = {"seed": int(folder.name.split("-")[1]), "model_a": row["model_a"], "model_b": row["model_b"]}
    for criterion, _ in CRITERIA:
        cell = row[criterion]
        figures[criterion] = {
            "n": cell["n"],
            **{key: {"rate": cell[key]["rate"], "ci": [cell[key]["ci_low"], cell[key]["ci_high"]]}
               for key in ("a_wins", "tie", "b_wins")},
            "net": cell["net_win_rate"]["rate"], "p_adjusted": cell["p_adjusted"],
        }
    alignment = row["text_alignment"]
    figures["text_alignment"] = {
        "a": alignment["a"]["rate"], "b": alignment["b"]["rate"], "difference": alignment["difference"]["rate"],
        "ci": [alignment["difference"]["ci_low"], alignment["difference"]["ci_high"]],
        "p_adjusted": alignment["p_adjusted"],
    }
    figures["oracle"] = {
        "fidelity": oracle[row["model_a"]]["fidelity"], "alignment": oracle[row["model_a"]]["alignment"],
        "fidelity_difference": oracle["difference"]["fidelity"],
        "alignment_difference": oracle["difference"]["alignment"],
        "base_fidelity": oracle[row["model_b"]]["fidelity"], "base_alignment": oracle[row["model_b"]]["alignment"],
    }
    probe = _load(folder / "probe.json")
    if probe is not None:
        figures["probe"] = probe
    if run is not None:
        figures["step_time_s"] = run.get("step_time_median_s")
        figures["wall_s"] = run.get("wall_s")
    return figures


def across_seeds(seeds: list[dict]) -> dict:
    """Mean and range over seeds of the figures the tables show."""
    def spread(values: list[float]) -> dict:
        return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                "sd": statistics.stdev(values) if len(values) > 1 else None, "values": values}

    out = {"seeds": [s["seed"] for s in seeds]}
    for criterion, _ in CRITERIA:
        out[criterion] = {key: spread([s[criterion][key]["rate"] for s in seeds]) for key in ("a_wins", "tie", "b_wins")}
        out[criterion]["net"] = spread([s[criterion]["net"] for s in seeds])
        significant = [s for s in seeds if s[criterion]["p_adjusted"] < 0.05]
        out[criterion]["significant_seeds"] = len(significant)
        out[criterion]["significant_for"] = {"a": sum(1 for s in significant if s[criterion]["net"] > 0),
                                             "b": sum(1 for s in significant if s[criterion]["net"] < 0)}
    out["text_alignment"] = {"difference": spread([s["text_alignment"]["difference"] for s in seeds]),
                             "significant_seeds": sum(1 for s in seeds if s["text_alignment"]["p_adjusted"] < 0.05)}
    out["fidelity_difference"] = spread([s["oracle"]["fidelity_difference"]["mean"] for s in seeds])
    out["fidelity"] = spread([s["oracle"]["fidelity"]["mean"] for s in seeds])
    out["alignment"] = spread([s["oracle"]["alignment"]["mean"] for s in seeds])
    out["alignment_difference"] = spread([s["oracle"]["alignment_difference"]["mean"] for s in seeds])
    times = [s["step_time_s"] for s in seeds if s.get("step_time_s")]
    if times:
        out["step_time_s"] = spread(times)
    return out


def collect(out: Path) -> dict:
    summary = {
        "settings": {"train_prompts": TRAIN_PROMPTS, "eval_prompts": EVAL_PROMPTS, "k": K, "noise": NOISE,
                     "pixel_weight": PIXEL_WEIGHT},
        "models": {},
    }
    for model in MODELS:
        rows, h2h, base = {}, {}, None
        for row in ROWS:
            seeds = [f for f in (seed_figures(p) for p in sorted((out / model / row.name).glob("seed-*"))) if f]
            if seeds:
                rows[row.name] = {"table": row.table, "label": row.label, "per_seed": seeds,
                                  "across_seeds": across_seeds(seeds)}
                base = base or {"fidelity": seeds[0]["oracle"]["base_fidelity"],
                                "alignment": seeds[0]["oracle"]["base_alignment"]}
        for a, b in HEAD_TO_HEAD:
            seeds = [f for f in (seed_figures(p) for p in sorted((out / model / "h2h" / f"{a}--{b}").glob("seed-*"))) if f]
            if seeds:
                h2h[f"{a}--{b}"] = {"a": a, "b": b, "per_seed": seeds, "across_seeds": across_seeds(seeds)}
        if rows:
            probe = _load(out / model / "base" / "probe.json")
            if probe is not None:
                base = {**base, "probe": probe}
            ceiling = _load(out / model / "base" / "vae-ceiling.json")
            if ceiling is not None:
                base = {**base, "vae_ceiling": {k: v for k, v in ceiling.items() if k != "prompts"}}
            summary["models"][model] = {"base": base, "rows": rows, "head_to_head": h2h}
    return summary


def _ceiling_text(base: dict) -> str:
    ceiling = base.get("vae_ceiling")
    if ceiling is None:
        return ""
    vae = ceiling["vae"]
    return (f" The same captions' ground-truth renders through the toy VAE (what the frozen decoder allows): texture "
            f"fidelity {vae['fidelity']['mean']:.3f} [{vae['fidelity']['ci95'][0]:.3f}, {vae['fidelity']['ci95'][1]:.3f}]"
            f", alignment accuracy {vae['alignment']['mean']:.3f}; the renders themselves: fidelity "
            f"{ceiling['render']['fidelity']['mean']:.3f}, alignment {ceiling['render']['alignment']['mean']:.3f}.")


def _pct(spread: dict) -> str:
    text = f"{100 * spread['mean']:.1f}"
    if len(spread["values"]) > 1:
        text += f" ({100 * spread['min']:.0f}–{100 * spread['max']:.0f})"
    return text


def _num(spread: dict, digits: int = 3) -> str:
    text = f"{spread['mean']:+.{digits}f}"
    if len(spread["values"]) > 1:
        text += f" ({spread['min']:+.{digits}f} to {spread['max']:+.{digits}f})"
    return text


PROBE_MEASURES = (("latent_mse", "latent ‖ε̂ − ε‖²"), ("pixel_mse_eps", "pixel, eq. 2"), ("pixel_mse_x0", "pixel, eq. 8"))


def probe_lines(model: str, data: dict) -> list[str]:
    """Held-out errors of each row's seed-0 model, as a change from the base's."""
    base = data["base"]["probe"]
    lines = ["", f"Held-out errors on {model}: the training objective's own errors on the {base['captions']} "
             f"evaluation captions' renders ({base['draws']} draws of noise and timestep each, the same for every "
             "model), seed 0, as a change from the base's (lower is better):", "",
             "| row | " + " | ".join(label for _, label in PROBE_MEASURES) + " |",
             "| --- | " + " | ".join("---" for _ in PROBE_MEASURES) + " |",
             "| base (absolute) | " + " | ".join(f"{base[key]:.5f}" for key, _ in PROBE_MEASURES) + " |"]
    for row in data["rows"].values():
        probe = next((s["probe"] for s in row["per_seed"] if s["seed"] == 0 and "probe" in s), None)
        if probe is not None:
            lines.append(f"| {row['label']} | " + " | ".join(
                f"{100 * (probe[key] / base[key] - 1):+.1f} %" for key, _ in PROBE_MEASURES) + " |")
    return lines


def tables(summary: dict) -> str:
    lines = [
        "<!-- written by `python bench/replication.py --summarize`; do not edit by hand -->",
        "Win / tie / loss in % of prompts against the base (mean over seeds, seed range in brackets); "
        "`sig.` counts the seeds whose sign test is significant after Holm's correction (α = 0.05); "
        "Δ fidelity and Δ alignment are the oracle's paired differences from the base.",
        "",
    ]
    for model, data in summary["models"].items():
        lines += [f"### {model}", "",
                  f"Base model: texture fidelity {data['base']['fidelity']['mean']:.3f} "
                  f"[{data['base']['fidelity']['ci95'][0]:.3f}, {data['base']['fidelity']['ci95'][1]:.3f}], "
                  f"alignment accuracy {data['base']['alignment']['mean']:.3f} "
                  f"[{data['base']['alignment']['ci95'][0]:.3f}, {data['base']['alignment']['ci95'][1]:.3f}]."
                  + _ceiling_text(data["base"]), ""]
        lines += ["| row | table | seeds | flaws win | tie | loss | sig. | appeal win | tie | loss | sig. | "
                  "alignment Δ (McNemar sig.) | Δ fidelity | Δ alignment (oracle) | step s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in data["rows"].items():
            s = row["across_seeds"]
            cells = [row["label"], row["table"], str(len(s["seeds"]))]
            for criterion, _ in CRITERIA:
                cells += [_pct(s[criterion][k]) for k in ("a_wins", "tie", "b_wins")]
                cells.append(f"{s[criterion]['significant_seeds']}/{len(s['seeds'])}")
            cells.append(f"{_num(s['text_alignment']['difference'])} ({s['text_alignment']['significant_seeds']}"
                         f"/{len(s['seeds'])})")
            cells += [_num(s["fidelity_difference"]), _num(s["alignment_difference"])]
            cells.append(f"{s['step_time_s']['mean']:.2f}" if "step_time_s" in s else "–")
            lines.append("| " + " | ".join(cells) + " |")
        if "probe" in data["base"]:
            lines += probe_lines(model, data)
        if data["head_to_head"]:
            lines += ["", f"Head to head on {model} (a against b, same seed; `sig. a / b`: the seeds whose sign test "
                      "is significant after Holm's correction, in a's favour / in b's):", "",
                      "| a | b | seeds | flaws: a wins | tie | b wins | sig. a / b | appeal: a wins | tie | b wins "
                      "| sig. a / b |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for entry in data["head_to_head"].values():
                s = entry["across_seeds"]
                cells = [ROW[entry["a"]].label, ROW[entry["b"]].label, str(len(s["seeds"]))]
                for criterion, _ in CRITERIA:
                    cells += [_pct(s[criterion][k]) for k in ("a_wins", "tie", "b_wins")]
                    cells.append(f"{s[criterion]['significant_for']['a']} / {s[criterion]['significant_for']['b']}")
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# The cost benchmark's setups (bench/train_step.py --toy, docs/replication/cost/<model>.json) of each cost mode.
COST_SETUPS = {"latent only": "sft latent", "full pixel term": "sft latent+pixel",
               "pixel_crop 0.5": "sft latent+pixel, crop 0.5", "pixel_crop 0.25": "sft latent+pixel, crop 0.25",
               "tiny decoder": "sft latent+pixel, tiny decoder", "decoder checkpointing": "sft latent+pixel, decoder ckpt"}
STEP_RATIO_MAX, COSINE_MIN = 1.5, 0.9  # the rule for recommending a cheap mode


def cost_table(summary: dict, out: Path) -> str:
    """What each way of computing the pixel term costs (the benchmark) against what it buys (its SFT row)."""
    lines = ["## Cost of the pixel term against what it buys", "",
             "SFT, batch 16 in the benchmark (CPU time of one step, 1 thread; peak memory of the step's activations) "
             "and batch 8 in the study's rows (quality: seed 0 unless the row has more seeds, then their mean). "
             f"Recommended: step ≤ {STEP_RATIO_MAX}× latent-only and total-gradient cosine ≥ {COSINE_MIN}. Decoder "
             "checkpointing computes the full term's gradient (cosine 1.000), so its quality is the full term's row.", ""]
    for model, data in summary["models"].items():
        bench = _load(out / "cost" / f"{model}.json")
        if bench is None:
            continue
        results = {r["setup"]: r for r in bench["results"] if r["objective"] == "sft"}
        latent_step = results["sft latent"]["step_cpu_s"]
        lines += [f"**{model}** (pixel weight {PIXEL_WEIGHT[model]:g}):", "",
                  "| mode | step ms | × latent-only | peak MB | cosine, total | cosine, pixel term | Δ fidelity | "
                  "alignment (oracle) | flaws win / loss | appeal win / loss | recommended |",
                  "| --- | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- | --- |"]
        for mode, setup in COST_SETUPS.items():
            result = results.get(setup)
            if result is None:
                continue
            ratio = result["step_cpu_s"] / latent_step
            cells = [mode, f"{1000 * result['step_cpu_s']:.0f}", "–" if mode == "latent only" else f"{ratio:.2f}",
                     f"{result['peak_mem_mb']:.0f}"]
            for key in ("cosine_total", "cosine_pixel"):
                cosine = result.get(key)
                cells.append(f"{cosine['mean']:.3f} [{cosine['ci95'][0]:.3f}, {cosine['ci95'][1]:.3f}]" if cosine
                             else ("1 (reference)" if mode == "full pixel term" else "–"))
            row = data["rows"].get(COST_ROWS[mode])
            if row is None:
                cells += ["not run"] * 4
            else:
                s = row["across_seeds"]
                cells += [f"{s['fidelity_difference']['mean']:+.3f}", f"{s['alignment']['mean']:.3f}"]
                cells += [f"{100 * s[c]['a_wins']['mean']:.0f} / {100 * s[c]['b_wins']['mean']:.0f} %"
                          for c, _ in CRITERIA]
            cheap = mode not in ("latent only", "full pixel term")
            cosine = (result.get("cosine_total") or {}).get("mean")
            verdict = ("yes" if ratio <= STEP_RATIO_MAX and cosine is not None and cosine >= COSINE_MIN else "no") \
                if cheap else "–"
            lines.append("| " + " | ".join(cells + [verdict]) + " |")
        lines.append("")
    return "\n".join(lines)


def plots(summary: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for model, data in summary["models"].items():
        names = list(data["rows"])
        fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(names) + 1.5), sharey=True)
        for ax, (criterion, title) in zip(axes[:2], CRITERIA):
            for y, name in enumerate(names):
                for offset, seed in zip((-0.2, 0.0, 0.2), data["rows"][name]["per_seed"]):
                    cell = seed[criterion]
                    for key, colour in (("a_wins", "tab:green"), ("b_wins", "tab:red")):
                        rate, (low, high) = cell[key]["rate"], cell[key]["ci"]
                        ax.errorbar(100 * rate, y + offset, xerr=[[100 * (rate - low)], [100 * (high - rate)]],
                                    fmt="o", color=colour, ms=3, capsize=2, lw=0.8)
            ax.set_title(f"{title}: win (green) / loss (red) vs base, % (95 % Wilson CI, one mark per seed)",
                         fontsize=8)
            ax.set_xlim(0, 100)
            ax.grid(axis="x", alpha=0.3)
        ax = axes[2]
        for y, name in enumerate(names):
            for offset, seed in zip((-0.2, 0.0, 0.2), data["rows"][name]["per_seed"]):
                diff = seed["oracle"]["fidelity_difference"]
                low, high = diff["ci95"]
                ax.errorbar(diff["mean"], y + offset, xerr=[[diff["mean"] - low], [high - diff["mean"]]], fmt="o",
                            color="tab:blue", ms=3, capsize=2, lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title("Texture fidelity − base's, paired over prompts (95 % bootstrap CI, per seed)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(range(len(names)), [data["rows"][n]["label"] for n in names], fontsize=8)
        axes[0].invert_yaxis()
        fig.suptitle(f"{model}: each row against the base model", fontsize=10)
        fig.tight_layout()
        path = folder / f"{model}-rows.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _through_vae(model: str, images: list) -> list:
    """The images encoded and decoded by the model's frozen VAE: the most detail any denoiser's output can keep."""
    import torch
    from diffusers import AutoencoderKL

    from toyworld.quality import degrade

    vae = AutoencoderKL.from_pretrained(Path(__file__).resolve().parents[1] / "toyworld/weights" / model / "vae",
                                        torch_dtype=torch.float32).eval()
    return [degrade(image.astype("float32") / 255, "vae", vae) for image in images]


def grids(out: Path, folder: Path) -> list[Path]:
    """Per model: the captions' ground-truth renders, the renders through the toy VAE, then the base's and each row's seed-0 evaluation images, at
    native size, each strip followed by a 4× nearest-neighbour zoom of every image's central 24×24 crop (the
    textures' scale)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from toyworld.scenes import parse_caption, render

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    zoom, crop, label_w = 4, 24, 230
    for model in MODELS:
        base = out / model / "base" / "samples"
        if not base.exists():
            continue
        captions = json.loads((base / "captions.json").read_text(encoding="utf-8"))
        names = sorted(captions)
        renders = {name: Image.fromarray((np.clip(render(parse_caption(captions[name])), 0, 1) * 255).round()
                                         .astype(np.uint8)) for name in names}
        through_vae = _through_vae(model, [np.asarray(renders[name]) for name in names])
        strips = [("ground-truth render", renders.get),
                  ("render through the toy VAE", lambda n: Image.fromarray(through_vae[names.index(n)])),
                  ("base model", lambda n: Image.open(base / f"{n}.png"))]
        for row in ROWS:
            samples = out / model / row.name / "seed-0" / "samples"
            if samples.exists():
                strips.append((row.label, lambda n, samples=samples: Image.open(samples / f"{n}.png")))
        cell = crop * zoom
        grid = Image.new("RGB", (label_w + len(names) * (cell + 4), len(strips) * (64 + cell + 8)), "white")
        draw = ImageDraw.Draw(grid)
        y = 0
        for label, image_of in strips:
            draw.text((4, y + 4), label, fill="black")
            for i, name in enumerate(names):
                image = image_of(name).convert("RGB")
                x = label_w + i * (cell + 4)
                grid.paste(image, (x, y))
                left = (image.width - crop) // 2
                zoomed = image.crop((left, left, left + crop, left + crop)).resize((cell, cell), Image.NEAREST)
                grid.paste(zoomed, (x, y + 64))
            y += 64 + cell + 8
        path = folder / f"{model}.png"
        grid.save(path, optimize=True)
        written.append(path)
    return written


def summarize(out: Path) -> dict:
    summary = collect(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "tables.md").write_text(tables(summary) + "\n" + cost_table(summary, out), encoding="utf-8")
    for path in plots(summary, out / "plots") + grids(out, out / "grids"):
        print(f"wrote {path}")
    print(f"wrote {out / 'summary.json'} and {out / 'tables.md'}")
    doc = out.parent / "toy-replication.md"
    if doc.exists():  # the write-up quotes the tables between its markers
        text = doc.read_text(encoding="utf-8")
        start, end = "<!-- tables:start -->\n", "<!-- tables:end -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            text = head + start + (out / "tables.md").read_text(encoding="utf-8").rstrip("\n") + "\n" + end + rest.split(end, 1)[1]
            doc.write_text(text, encoding="utf-8")
            print(f"wrote the tables into {doc}")
    return summary


def compare_quick(quick_out: Path, out: Path, model: str, rows) -> int:
    """A quick rerun's rows (seed 0) against the committed ones: each figure within the committed
    seeds' spread (their range, widened by one standard deviation) passes."""
    failures = 0
    for name in rows:
        mine = seed_figures(quick_out / model / name / "seed-0")
        committed = [f for f in (seed_figures(p) for p in sorted((out / model / name).glob("seed-*"))) if f]
        if mine is None or not committed:
            print(f"{name}: nothing to compare ({'no rerun' if mine is None else 'no committed seeds'})")
            failures += 1
            continue
        spread = across_seeds(committed)
        checks = [
            (f"{c} win", mine[c]["a_wins"]["rate"], spread[c]["a_wins"]) for c, _ in CRITERIA
        ] + [("Δ fidelity", mine["oracle"]["fidelity_difference"]["mean"], spread["fidelity_difference"])]
        for label, value, committed_spread in checks:
            margin = committed_spread["sd"] or 0.0
            ok = committed_spread["min"] - margin - 1e-9 <= value <= committed_spread["max"] + margin + 1e-9
            failures += not ok
            print(f"{name}: {label} {value:+.3f}, committed seeds {committed_spread['min']:+.3f} to "
                  f"{committed_spread['max']:+.3f} (sd {margin:.3f}): {'within' if ok else 'OUTSIDE'}")
    return 1 if failures else 0
