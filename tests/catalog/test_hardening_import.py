"""import_prompts answers every bad file with one `FILE[:LINE]: field 'F': message` line and writes nothing."""

import json

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Prompt, PromptSet

pytestmark = pytest.mark.django_db


def assert_refused(path, expected, set_name="s"):
    with pytest.raises(CommandError) as info:
        call_command("import_prompts", str(path), "--set", set_name)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and message.endswith("(nothing was imported)")
    assert not Prompt.objects.exists() and not PromptSet.objects.exists()


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("p.jsonl", b'{"prompt": "fine"}\n{"prompt": "a cat\\u0000"}\n', "p.jsonl:2: field 'prompt': contains a NUL character"),
        ("p.csv", b"prompt,category\na dog,animals\na cat,ani\x00mals\n", "p.csv:3: field 'category': contains a NUL character"),
    ],
    ids=["json-escape", "raw-byte"],
)
def test_nul_character_in_a_field_is_an_error(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    assert_refused(path, expected)


def test_field_longer_than_its_column_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a cat", "category": "c" * 201}) + "\n", encoding="utf-8")
    assert_refused(path, "p.jsonl:1: field 'category': longer than 200 characters (201)")


def test_question_field_longer_than_its_column_names_the_question(tmp_path):
    path = tmp_path / "p.jsonl"
    row = {"prompt": "a cat", "questions": ["Is there a cat?", {"text": "Is it red?", "category": "x" * 101}]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert_refused(path, "p.jsonl:1: field 'questions[1].category': longer than 100 characters")


def test_set_name_longer_than_its_column_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat"}\n', encoding="utf-8")
    assert_refused(path, "p.jsonl: field 'set': longer than 200 characters", set_name="s" * 201)


def test_latin1_csv_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("prompt\na dog\na café\n".encode("latin-1"))
    assert_refused(path, "p.csv:3: not UTF-8 text")


def test_utf16_csv_is_an_error(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("prompt\na dog\n".encode("utf-16"))
    assert_refused(path, "p.csv: UTF-16 text; save the file as UTF-8")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("p.jsonl", '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "p.jsonl:1: JSON nested too deeply"),
        ("p.csv", 'prompt,questions\na cat,"' + "[" * 50_000 + "]" * 50_000 + '"\n',
         "p.csv:2: field 'questions': JSON nested too deeply"),
    ],
)
def test_deeply_nested_json_is_an_error(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert_refused(path, expected)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("p.csv", 'prompt,category\na dog,animals\n"a cat,animals\na bird,animals\n', "p.csv:3: unterminated quote"),
        ("p.tsv", 'Prompt\tCategory\n"a dog\tanimals\na cat\tanimals\n', "p.tsv:2: unterminated quote"),
    ],
    ids=["csv", "parti-tsv"],
)
def test_unterminated_quote_is_an_error_naming_the_line(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert_refused(path, expected)
