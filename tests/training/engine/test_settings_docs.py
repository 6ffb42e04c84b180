"""The settings reference and the CLI help come from the fields, and the docs are up to date."""

from __future__ import annotations

import pytest
from pydantic import Field

from training.engine.cli import main
from training.engine.config import SampleConfig, TrainConfig
from training.engine.settings_docs import DOC, render_doc, setting_docs, settings_table


def test_docs_hold_the_current_settings_tables():
    text = DOC.read_text(encoding="utf-8")
    assert render_doc(text) == text, "docs/training.md is stale: run python -m training.engine.settings_docs"


@pytest.mark.parametrize("model", [TrainConfig, SampleConfig])
def test_every_setting_has_help_and_allowed_values(model):
    docs = setting_docs(model)
    assert [doc.name for doc in docs] == list(model.model_fields)
    assert all(doc.help and doc.allowed for doc in docs)


def test_the_table_follows_the_fields():
    class Extended(SampleConfig):
        eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM η.")

    table = settings_table(Extended)
    assert "| `eta` | number in [0.0, 1.0] | `0.0` | DDIM η. |" in table
    assert table != settings_table(SampleConfig)
    rows = {doc.name: doc for doc in setting_docs(TrainConfig)}
    assert rows["resolution"].allowed == "integer > 0, multiple of 8"
    assert rows["latent_objective"].allowed == "`sft` | `dpo` | `simpo` | `none`"
    assert rows["max_grad_norm"].allowed == "number > 0 or null"
    assert rows["pretrained_model"].default == "" and rows["pixel_crop"].default == "1.0"


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return " ".join(capsys.readouterr().out.split())


def test_train_help_lists_every_setting_with_its_help_and_allowed_values(capsys):
    text = _help(capsys, ["train", "--help"])
    for doc in setting_docs(TrainConfig):
        assert f"{doc.name}: {doc.allowed.replace('`', '')}" in text
        assert " ".join(doc.help.replace("`", "").split()) in text


def test_sample_help_has_one_option_per_sampler_setting(capsys):
    text = _help(capsys, ["sample", "--help"])
    for doc in setting_docs(SampleConfig):
        assert f"--{doc.name.replace('_', '-')} VALUE" in text
    assert "Classifier-free guidance scale (≤ 1: no guidance). Allowed: number ≥ 0.0; default 7.5." in text


def test_a_bad_sampler_option_exits_naming_the_setting(tmp_path, capsys):
    assert main(["sample", "--model", str(tmp_path), "--prompt", "a cat", "--out", str(tmp_path / "o"),
                 "--steps", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: steps: must be greater than 0")
    assert main(["sample", "--model", str(tmp_path), "--prompt", "a cat", "--out", str(tmp_path / "o"),
                 "--dtype", "fp8"]) == 2
    assert capsys.readouterr().err.startswith("error: dtype: cannot parse 'fp8'")
