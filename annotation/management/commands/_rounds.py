"""Shared argument handling of the annotation commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from annotation.models import Round


def round_get(value: str) -> Round:
    """A round by id or by name."""
    round_ = Round.objects.filter(pk=int(value)).first() if value.isdigit() else None
    round_ = round_ or Round.objects.filter(name=value).first()
    if round_ is None:
        raise CommandError(f"no round with id or name {value!r}")
    return round_
