from rest_framework.permissions import BasePermission

from annotation.roles import is_researcher


class IsResearcher(BasePermission):
    """Researcher endpoints: members of the `researchers` group (or superusers) only."""

    message = "Researchers only."

    def has_permission(self, request, view):
        return is_researcher(request.user)
