"""Annotator accounts in bulk: created from a list, with one-time set-password links."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from annotation.models import ANNOTATORS_GROUP
from catalog.prompt_import import ImportFileError, table_rows


@dataclass(frozen=True)
class AnnotatorRow:
    line: int
    username: str
    email: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class AnnotatorAccount:
    """One row's outcome: ``created``, ``reset`` (an existing account given new credentials) or ``existing``."""

    user: object
    outcome: str
    password: str = ""


def annotator_rows_parse(path: str | Path) -> list[AnnotatorRow]:
    """The rows of an annotator list (CSV: username, email, optional name), every one checked first."""
    User = get_user_model()
    username_field = User._meta.get_field(User.USERNAME_FIELD)
    email_field = User._meta.get_field("email")
    name_limit = User._meta.get_field("first_name").max_length
    rows, seen = [], {}
    for line, row in table_rows(path, ("username", "email")):
        values = {}
        for name in ("username", "email", "name"):
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                raise ImportFileError(path, line, name, "expected a string")
            values[name] = (value or "").strip()
        username, email = values["username"], values["email"]
        if not username:
            raise ImportFileError(path, line, "username", "missing or empty")
        try:
            username_field.clean(username, None)
        except ValidationError as exc:
            raise ImportFileError(path, line, "username", " ".join(exc.messages)) from None
        if username in seen:
            raise ImportFileError(path, line, "username", f"'{username}' is also on line {seen[username]}")
        seen[username] = line
        if not email:
            raise ImportFileError(path, line, "email", "missing or empty")
        try:
            email_field.clean(email, None)
        except ValidationError as exc:
            raise ImportFileError(path, line, "email", f"{email!r}: {' '.join(exc.messages)}") from None
        first_name, _, last_name = values["name"].partition(" ")
        if len(first_name) > name_limit or len(last_name.strip()) > name_limit:
            raise ImportFileError(path, line, "name", f"a first or last name longer than {name_limit} characters")
        rows.append(AnnotatorRow(
            line=line, username=username, email=email, first_name=first_name, last_name=last_name.strip(),
        ))
    if not rows:
        raise ImportFileError(path, None, None, "the file lists no annotators")
    return rows


@transaction.atomic
def annotators_create(
    *, rows: list[AnnotatorRow], reset_existing: bool = False, with_passwords: bool = False
) -> list[AnnotatorAccount]:
    """Create an annotator account per row; existing accounts are left alone unless ``reset_existing``.

    A new (or reset) account gets an unusable password, so it is entered only through its
    set-password link, or, with ``with_passwords``, a random password returned once.
    """
    User = get_user_model()
    group = Group.objects.get(name=ANNOTATORS_GROUP)
    existing = {u.get_username(): u for u in User.objects.filter(**{f"{User.USERNAME_FIELD}__in": [r.username for r in rows]})}
    accounts = []
    for row in rows:
        user = existing.get(row.username)
        if user is not None and not reset_existing:
            accounts.append(AnnotatorAccount(user=user, outcome="existing"))
            continue
        outcome = "reset" if user is not None else "created"
        if user is None:
            user = User(
                **{User.USERNAME_FIELD: row.username}, email=row.email, first_name=row.first_name, last_name=row.last_name,
            )
        password = secrets.token_urlsafe(12) if with_passwords else ""
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save()
        user.groups.add(group)
        accounts.append(AnnotatorAccount(user=user, outcome=outcome, password=password))
    return accounts


def password_set_link(*, user, base_url: str) -> str:
    """A one-time link to set the account's password (Django's reset token: it stops working once used)."""
    path = reverse(
        "password_reset_confirm",
        kwargs={"uidb64": urlsafe_base64_encode(force_bytes(user.pk)), "token": default_token_generator.make_token(user)},
    )
    return base_url.rstrip("/") + path
