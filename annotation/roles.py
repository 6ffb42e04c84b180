"""The two roles: annotators judge images; researchers run rounds, training and evaluation."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied

from annotation.login_throttle import login_lockout
from annotation.models import ANNOTATORS_GROUP, RESEARCHERS_GROUP

RESEARCHER_APPS = ("outbox", "catalog", "annotation", "training", "evaluation")


def _in_group(user, name: str, loaded: str) -> bool:
    # ``loaded``: the membership read with the user by RolesBackend (fresh on every request).
    membership = getattr(user, loaded, None)
    if membership is None:
        membership = user.groups.filter(name=name).exists()
    return membership


def is_researcher(user) -> bool:
    return bool(
        user and user.is_authenticated
        and (user.is_superuser or _in_group(user, RESEARCHERS_GROUP, "in_researchers_group"))
    )


def is_annotator(user) -> bool:
    return bool(user and user.is_authenticated and _in_group(user, ANNOTATORS_GROUP, "in_annotators_group"))


class RolesBackend(ModelBackend):
    """The model backend, loading a session's user together with their role memberships.

    One query per request instead of three (user, then each group check). Read on every
    request, not cached, so removing someone from a group takes effect on their next request.
    Refuses every password, the right one too, while the account or address is locked
    (``annotation.login_throttle``).
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if login_lockout(request=request, username=username):
            raise PermissionDenied("login locked")  # authenticate() stops here: no other backend tries
        return super().authenticate(request, username=username, password=password, **kwargs)

    def get_user(self, user_id):
        User = get_user_model()
        user_table, pk = User._meta.db_table, User._meta.pk.column
        membership = User.groups.through._meta
        member_of = (
            f"EXISTS (SELECT 1 FROM {membership.db_table} m JOIN {Group._meta.db_table} g ON g.id = m.group_id"
            f" WHERE m.{membership.get_field('user').column} = u.{pk} AND g.name = %s)"
        )
        rows = User._default_manager.raw(
            f"SELECT u.*, {member_of} AS in_annotators_group, {member_of} AS in_researchers_group"
            f" FROM {user_table} u WHERE u.{pk} = %s",
            [ANNOTATORS_GROUP, RESEARCHERS_GROUP, User._meta.pk.to_python(user_id)],
        )
        user = next(iter(rows), None)
        return user if user is not None and self.user_can_authenticate(user) else None


def roles_ensure(**kwargs) -> None:
    """Create both groups and give researchers every permission of the project's apps.

    Runs after each migrate, when all permissions exist.
    """
    Group.objects.get_or_create(name=ANNOTATORS_GROUP)
    researchers, _ = Group.objects.get_or_create(name=RESEARCHERS_GROUP)
    permissions = Permission.objects.filter(content_type__app_label__in=RESEARCHER_APPS)
    researchers.permissions.add(*permissions)
    researchers.permissions.add(*Permission.objects.filter(content_type__app_label="auth", codename__startswith="view_"))
