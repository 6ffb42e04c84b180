"""register_model answers every bad pipeline directory with one line and writes nothing."""

import json

import pytest
from django.core.management import CommandError, call_command

from catalog.models import ModelVersion
from tests.catalog.test_register_model import PIPELINES, make_pipeline_dir

pytestmark = pytest.mark.django_db


def assert_one_line_error(path, message, name="m"):
    with pytest.raises(CommandError) as info:
        call_command("register_model", str(path), "--name", name)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not ModelVersion.objects.exists()


def rewrite_index(path, **changes):
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text())
    index.update(changes)
    index_file.write_text(json.dumps(index))


def test_empty_component_entry_is_reported(tmp_path):
    path = make_pipeline_dir(tmp_path / "p", *PIPELINES["sd15"])
    rewrite_index(path, unet=[])
    assert_one_line_error(path, "model_index.json: component 'unet' is missing")


def test_scheduler_without_class_name_anywhere_is_reported(tmp_path):
    path = make_pipeline_dir(tmp_path / "p", *PIPELINES["sd15"])
    rewrite_index(path, scheduler=["diffusers"])
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "epsilon"}))
    assert_one_line_error(path, "model_index.json: field 'scheduler': expected [library, class]")


def test_scheduler_class_name_that_is_not_a_string_is_reported(tmp_path):
    path = make_pipeline_dir(tmp_path / "p", *PIPELINES["sd15"])
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": None}))
    assert_one_line_error(path, "scheduler_config.json: field '_class_name'")


def test_non_utf8_model_index_is_reported(tmp_path):
    path = make_pipeline_dir(tmp_path / "p", *PIPELINES["sd15"])
    (path / "model_index.json").write_bytes('{"_class_name": "Pipeline é"}'.encode("latin-1"))
    assert_one_line_error(path, "model_index.json: not UTF-8 text")


def test_deeply_nested_model_index_is_reported(tmp_path):
    path = make_pipeline_dir(tmp_path / "p", *PIPELINES["sd15"])
    (path / "model_index.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line_error(path, "model_index.json: JSON nested too deeply")


def test_name_longer_than_the_column_is_reported(tmp_path):
    path = make_pipeline_dir(tmp_path / "p", *PIPELINES["sd15"])
    assert_one_line_error(path, "--name: longer than 200 characters", name="m" * 201)
