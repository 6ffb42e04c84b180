from rest_framework import authentication, exceptions
from rest_framework.permissions import BasePermission

from annotation.roles import is_researcher


class IsResearcher(BasePermission):
    """Researcher endpoints: members of the `researchers` group (or superusers) only."""

    message = "Researchers only."

    def has_permission(self, request, view):
        return is_researcher(request.user)


class IsAnnotator(BasePermission):
    """Annotator endpoints: members of the `annotators` group only."""

    message = "Annotators only."

    def has_permission(self, request, view):
        from annotation.roles import is_annotator

        return is_annotator(request.user)


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication; a missing or wrong CSRF token is refused with its own ``code``."""

    def enforce_csrf(self, request):
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc.detail), code="csrf_failed") from exc
