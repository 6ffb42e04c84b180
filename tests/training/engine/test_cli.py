"""The command line, and a two-process CPU run through accelerate launch (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from training.engine import loop
from training.engine.cli import main
from training.engine.pipeline_index import read_pipeline_index

REPO = Path(__file__).resolve().parents[3]


def test_tiny_pipeline_command(tmp_path, capsys):
    assert main(["tiny-pipeline", "--family", "dit", "--out", str(tmp_path / "dit")]) == 0
    assert read_pipeline_index(tmp_path / "dit").pipeline_class == "PixArtAlphaPipeline"


def write_config(path: Path, tiny_pipelines, data, output_dir, **extra) -> Path:
    settings = {
        "pretrained_model": str(tiny_pipelines["unet"]), "output_dir": str(output_dir), "train_data": str(data),
        "resolution": 32, "max_train_steps": 2, "train_batch_size": 1, "learning_rate": 1e-3,
        "latent_objective": "simpo", "pixel_objective": "simpo", "pixel_weight": 2.0, "latent_beta": 100.0,
        "pixel_beta": 100.0, **extra,
    }
    path.write_text("\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items()) + "\n")
    return path


def test_train_and_sample_commands(tiny_pipelines, preference_manifest, tmp_path, capsys):
    config = write_config(tmp_path / "run.toml", tiny_pipelines, preference_manifest, tmp_path / "run")
    assert main(["train", "--config", str(config), "--set", "max_train_steps=1", "--set", "pixel_crop=0.5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["global_step"] == 1
    assert main(["sample", "--model", summary["model_dir"], "--prompt", "a cat", "--images-per-prompt", "2",
                 "--seed-start", "3", "--steps", "2", "--out", str(tmp_path / "samples")]) == 0
    record = json.loads((tmp_path / "samples" / "samples.json").read_text())
    assert [image["seed"] for image in record["images"]] == [3, 4]


def test_bad_config_exits_with_the_field_named(tiny_pipelines, preference_manifest, tmp_path, capsys):
    config = write_config(tmp_path / "run.toml", tiny_pipelines, preference_manifest, tmp_path / "run")
    assert main(["train", "--config", str(config), "--set", "pixel_objective=ppo"]) == 2
    assert "pixel_objective" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--set", "pixel_wieght=2"]) == 2
    assert "pixel_wieght" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_run_keeps_replicas_identical(tiny_pipelines, preference_manifest, tmp_path):
    from diffusers import UNet2DConditionModel

    output_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", tiny_pipelines, preference_manifest, output_dir,
                          max_train_steps=3, checkpointing_steps=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
               "-m", "training.engine", "train", "--config", str(config)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((output_dir / "train_summary.json").read_text())
    assert summary["num_processes"] == 2
    first, second = summary["replica_checksums"]
    assert first == second
    # The exported weights are the replicas' weights.
    exported = UNet2DConditionModel.from_pretrained(output_dir / "model" / "unet")
    assert loop.parameter_checksum(list(exported.parameters())) == first
    checkpoint = output_dir / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert [json.loads(line)["step"] for line in (output_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
