import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import AlignmentQuestion, Prompt, PromptSet
from catalog.prompt_import import PromptImportError, parse_prompt_file
from catalog.services import prompts_import

pytestmark = pytest.mark.django_db

PARTI = "Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\tmeanings\na red cube on a blue sphere\tArtifacts\tColors\t\n"
DSG = (
    "item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,question_natural_language\n"
    "w_1,A purple cube,cube,1,0,entity,whole,entity - whole (cube),Is there a cube?\n"
    'w_1,A purple cube,"cube, purple",2,1,attribute,color,"attribute - color (cube, purple)",Is the cube purple?\n'
    "n_2,Two dogs and a cat,dog,1,0,entity,whole,entity - whole (dog),Are there dogs?\n"
    "n_2,Two dogs and a cat,cat,2,0,entity,whole,entity - whole (cat),Is there a cat?\n"
    'n_2,Two dogs and a cat,"dog, two",3,"1,2",attribute,count,"attribute - count (dog, 2)",Are there two dogs and a cat?\n'
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parti_import_creates_prompts_with_category_and_challenge(tmp_path):
    result = prompts_import(path=write(tmp_path, "p.tsv", PARTI), set_name="parti")
    assert result.created == 2
    prompt = Prompt.objects.get(text="a red cube on a blue sphere")
    assert (prompt.category, prompt.challenge, prompt.prompt_set.name) == ("Artifacts", "Colors", "parti")


def test_dsg_import_keeps_question_dependencies(tmp_path):
    prompts_import(path=write(tmp_path, "d.csv", DSG), set_name="dsg")
    prompt = Prompt.objects.get(external_id="n_2")
    questions = {q.order: q for q in prompt.questions.all()}
    assert len(questions) == 3
    assert {p.order for p in questions[3].parents.all()} == {1, 2}
    assert not questions[1].parents.exists()
    assert questions[3].detail == "count"
    assert Prompt.objects.get(external_id="w_1").category == "w"


def test_dsg_stray_words_in_dependency_are_dropped_with_a_warning(tmp_path):
    text = DSG.replace('attribute,color,"attribute - color', 'attribute,color,"attribute - color').replace(
        'purple",2,1,', 'purple",2,"1, right",'
    )
    result = prompts_import(path=write(tmp_path, "d.csv", text), set_name="dsg")
    question = AlignmentQuestion.objects.get(prompt__external_id="w_1", order=2)
    assert [p.order for p in question.parents.all()] == [1]
    assert any("d.csv:3" in w and "'right'" in w for w in result.warnings)


def test_jsonl_and_csv_with_questions(tmp_path):
    jsonl = write(
        tmp_path, "p.jsonl",
        json.dumps({"prompt": "a cat on a mat", "category": "Animals", "questions": ["Is there a cat?", {"text": "Is the cat on a mat?", "parents": [1]}]})
        + "\n\n" + json.dumps({"prompt": "a lighthouse", "id": "lh"}) + "\n",
    )
    prompts_import(path=jsonl, set_name="mine")
    cat = Prompt.objects.get(text="a cat on a mat")
    assert cat.category == "Animals"
    child = cat.questions.get(order=2)
    assert [p.text for p in child.parents.all()] == ["Is there a cat?"]
    assert Prompt.objects.filter(external_id="lh").exists()

    csv_file = write(tmp_path, "p.csv", 'prompt,category,questions\n"a boat","Vehicles","[""Is there a boat?""]"\n')
    prompts_import(path=csv_file, set_name="mine-csv")
    assert Prompt.objects.get(text="a boat").questions.get().text == "Is there a boat?"


def test_reimport_creates_no_duplicates_and_updates_changes(tmp_path):
    path = write(tmp_path, "d.csv", DSG)
    prompts_import(path=path, set_name="dsg")
    again = prompts_import(path=path, set_name="dsg")
    assert (again.created, again.updated, again.unchanged, again.questions_created) == (0, 0, 2, 0)
    assert Prompt.objects.count() == 2 and AlignmentQuestion.objects.count() == 5
    assert AlignmentQuestion.parents.through.objects.count() == 3

    changed = write(tmp_path, "d2.csv", DSG.replace("Is the cube purple?", "Is the cube violet?"))
    result = prompts_import(path=changed, set_name="dsg")
    assert result.questions_updated == 1
    assert AlignmentQuestion.objects.filter(text="Is the cube violet?").count() == 1
    assert AlignmentQuestion.objects.count() == 5


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.jsonl", '{"prompt": "ok"}\n{"prompt": "broken"\n', "a.jsonl:2: invalid JSON"),
        ("b.jsonl", '{"prompt": "ok"}\n{"category": "x"}\n', "b.jsonl:2: field 'prompt': missing or empty"),
        ("c.jsonl", '{"prompt": "ok", "questions": [{"text": "q", "parents": [1]}]}\n', "c.jsonl:1: field 'questions[0].parents'"),
        ("d.tsv", "Prompt\tCategory\n\tAnimals\n", "d.tsv:2: field 'Prompt': empty"),
        ("e.tsv", "Text\tCategory\nx\ty\n", "e.tsv:1: field 'Prompt': missing column"),
        ("f.csv", DSG.replace(",2,1,attribute", ",two,1,attribute"), "f.csv:3: field 'proposition_id': expected an integer"),
        ("g.csv", DSG.replace("Is there a cat?", ""), "g.csv:5: field 'question_natural_language': empty"),
        ("h.csv", 'prompt,questions\n"x","[oops"\n', "h.csv:2: field 'questions': not a JSON list"),
        ("i.jsonl", '{"prompt": "x", "id": "1"}\n{"prompt": "y", "id": "1"}\n', "i.jsonl:2: field 'id': duplicate prompt id"),
    ],
)
def test_malformed_rows_name_file_line_and_field_and_write_nothing(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(PromptImportError) as info:
        prompts_import(path=path, set_name="broken")
    assert expected in str(info.value)
    assert not PromptSet.objects.filter(name="broken").exists()
    assert Prompt.objects.count() == 0


def test_dsg_multiline_field_reports_the_line_the_row_starts_on(tmp_path):
    text = DSG + 'x_3,"a long\nprompt",k,1,0,entity,whole,t,\n'
    with pytest.raises(PromptImportError, match=r"d.csv:7: field 'question_natural_language'"):
        parse_prompt_file(write(tmp_path, "d.csv", text), "dsg")


def test_ten_megabyte_file_broken_at_line_40000_leaves_database_unchanged(tmp_path):
    prompts_import(path=write(tmp_path, "seed.jsonl", '{"prompt": "already here"}\n'), set_name="big")
    path = tmp_path / "big.jsonl"
    padding = "x" * 200
    with path.open("w") as f:
        for i in range(1, 50_001):
            if i == 40_000:
                f.write('{"prompt": "half a line\n')
            else:
                f.write(json.dumps({"prompt": f"prompt {i} {padding}", "category": "c"}) + "\n")
    assert path.stat().st_size > 10_000_000
    with pytest.raises(CommandError, match=r"big.jsonl:40000: invalid JSON.*nothing was imported"):
        call_command("import_prompts", str(path), "--set", "big")
    assert list(Prompt.objects.values_list("text", flat=True)) == ["already here"]


def test_failure_during_write_rolls_back_everything(tmp_path, monkeypatch):
    from catalog import services

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "_questions_write", explode)
    with pytest.raises(RuntimeError):
        prompts_import(path=write(tmp_path, "d.csv", DSG), set_name="dsg")
    assert not PromptSet.objects.exists() and not Prompt.objects.exists()


def test_presets_load_the_shipped_files():
    call_command("import_prompts", "--preset", "dsg1k", verbosity=0)
    dsg = PromptSet.objects.get(name="DSG-1k")
    assert dsg.prompts.count() == 1060
    assert AlignmentQuestion.objects.filter(prompt__prompt_set=dsg).count() == 8182
    assert AlignmentQuestion.parents.through.objects.count() > 6000
    call_command("import_prompts", "--preset", "partiprompts", verbosity=0)
    parti = PromptSet.objects.get(name="PartiPrompts")
    assert parti.prompts.count() == 1632
    assert parti.prompts.values("category").distinct().count() == 12


def test_command_errors_are_one_line(tmp_path):
    with pytest.raises(CommandError, match="--set is required"):
        call_command("import_prompts", str(write(tmp_path, "p.tsv", PARTI)))
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_prompts", str(tmp_path / "missing.tsv"), "--set", "x")
