"""The two roles: annotators judge images; researchers run rounds, training and evaluation."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from annotation.models import ANNOTATORS_GROUP, RESEARCHERS_GROUP

RESEARCHER_APPS = ("annotation", "training", "evaluation")


def is_researcher(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_superuser or user.groups.filter(name=RESEARCHERS_GROUP).exists()))


def is_annotator(user) -> bool:
    return bool(user and user.is_authenticated and user.groups.filter(name=ANNOTATORS_GROUP).exists())


def roles_ensure(**kwargs) -> None:
    """Create both groups and give researchers every permission of the project's apps.

    Runs after each migrate, when all permissions exist.
    """
    Group.objects.get_or_create(name=ANNOTATORS_GROUP)
    researchers, _ = Group.objects.get_or_create(name=RESEARCHERS_GROUP)
    permissions = Permission.objects.filter(content_type__app_label__in=RESEARCHER_APPS)
    researchers.permissions.add(*permissions)
    researchers.permissions.add(*Permission.objects.filter(content_type__app_label="auth", codename__startswith="view_"))
