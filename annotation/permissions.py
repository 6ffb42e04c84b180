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
