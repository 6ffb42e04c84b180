"""manage.py create_annotators: accounts from a CSV, one-time set-password links, existing accounts left alone."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotation.roles import is_annotator
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CSV = "username,email,name\nada,ada@example.org,Ada Lovelace\nalan,alan@example.org,\n"


def write(tmp_path, text: str):
    path = tmp_path / "annotators.csv"
    path.write_text(text, encoding="utf-8")
    return path


def create(path, *args: str) -> str:
    out = io.StringIO()
    call_command("create_annotators", "--from", str(path), *args, stdout=out)
    return out.getvalue()


def links(out: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): (?:created|reset); set a password at (\S+)", out, re.M))


def test_new_annotators_get_a_link_that_sets_their_password_once(tmp_path, client):
    out = create(write(tmp_path, CSV), "--base-url", "https://study.example.org/")
    assert "2 annotators created, 0 reset, 0 left alone" in out
    ada = get_user_model().objects.get(username="ada")
    assert (ada.email, ada.first_name, ada.last_name) == ("ada@example.org", "Ada", "Lovelace")
    assert is_annotator(ada) and not ada.is_staff and not ada.has_usable_password()
    assert "log in with" not in out  # no plain password without the flag

    link = links(out)["ada"]
    assert link.startswith("https://study.example.org/accounts/reset/")
    path = link.removeprefix("https://study.example.org")
    form = client.get(path, follow=True)
    assert form.status_code == 200 and b"Set your password" in form.content
    done = client.post(form.redirect_chain[-1][0], {"new_password1": "a-long pass phrase 9", "new_password2": "a-long pass phrase 9"}, follow=True)
    assert b"Password set" in done.content
    assert client.login(username="ada", password="a-long pass phrase 9")
    client.logout()
    used = client.get(path, follow=True)
    assert b"This link has been used or has expired" in used.content


def test_existing_accounts_are_left_alone_unless_asked(tmp_path):
    UserFactory(username="ada")  # password "correct horse battery"
    out = create(write(tmp_path, CSV))
    assert "ada: exists, left alone" in out and "1 annotators created, 0 reset, 1 left alone" in out
    ada = get_user_model().objects.get(username="ada")
    assert ada.check_password("correct horse battery") and not is_annotator(ada)

    again = create(write(tmp_path, CSV), "--reset-existing", "--print-passwords")
    ada.refresh_from_db()
    assert "ada: reset" in again and "alan: reset" in again
    password = re.search(r"^ada: reset; .* \(or log in with (\S+)\)$", again, re.M).group(1)
    assert ada.check_password(password) and not ada.check_password("correct horse battery") and is_annotator(ada)


def test_rerunning_creates_nothing_new(tmp_path):
    create(write(tmp_path, CSV))
    out = create(write(tmp_path, CSV))
    assert "0 annotators created, 0 reset, 2 left alone" in out
    assert get_user_model().objects.count() == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("username,email\nada,ada@example.org\nada,other@example.org\n", r"annotators.csv:3: field 'username': 'ada' is also on line 2"),
        ("username,email\nada,ada@example.org\nbob,not-an-email\n", r"annotators.csv:3: field 'email': 'not-an-email': "),
        ("username,email\nada,\n", r"annotators.csv:2: field 'email': missing or empty"),
        ("username,email\nada b,ada@example.org\n", r"annotators.csv:2: field 'username': Enter a valid username"),
        ("username,email\n,ada@example.org\n", r"annotators.csv:2: field 'username': missing or empty"),
        ("user,email\nada,ada@example.org\n", r"annotators.csv:1: field 'username': missing column"),
        ("username,email\nada,ada@example.org,extra\n", r"annotators.csv:2: 3 columns, header has 2"),
        ("username,email\n", r"annotators.csv: the file lists no annotators"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_created(tmp_path, text, expected):
    with pytest.raises(CommandError) as refused:
        create(write(tmp_path, text))
    message = str(refused.value)
    assert re.search(expected, message), message
    assert "\n" not in message and message.endswith("(nothing was created)")
    assert not get_user_model().objects.exists()


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(CommandError, match=r"nope.csv: no such file \(nothing was created\)"):
        create(tmp_path / "nope.csv")
