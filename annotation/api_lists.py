"""How the research API's lists are filtered, ordered and throttled: DRF's conventions, every value checked.

DRF's ``OrderingFilter`` ignores a field it does not know; here an unknown ``?ordering=`` field, like a
filter value of the wrong type, is a 400 naming the parameter (the one exception handler's shape).
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend, OrderingFilter
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle


class QueryFilter(BaseFilterBackend):
    """Filters of a list: ``view.filter_serializer`` checks the query string, ``view.filter_lookups`` maps
    each parameter to its ORM lookup. Parameters not given filter nothing; unknown ones are ignored, as
    DRF ignores them (``page``, ``ordering``)."""

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "filter_serializer", None) is None:
            return queryset
        params = view.filter_serializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        wanted = {name: value for name, value in params.validated_data.items() if value is not None}
        return queryset.filter(**{view.filter_lookups[name]: value for name, value in wanted.items()})


class CheckedOrdering(OrderingFilter):
    """``?ordering=a,-b`` over ``view.ordering_fields``; an unknown field is a 400. Ties go by primary key,
    so pages never overlap."""

    def get_ordering(self, request, queryset, view):
        if not getattr(view, "ordering_fields", None):
            return None
        given = request.query_params.get(self.ordering_param)
        if given is None:
            return self.get_default_ordering(view)
        terms = [term.strip() for term in given.split(",") if term.strip()]
        allowed = list(view.ordering_fields)
        unknown = [term for term in terms if term.lstrip("-") not in allowed]
        if unknown or not terms:
            what = f"unknown field '{unknown[0][:50]}'" if unknown else "empty"
            raise ValidationError({self.ordering_param: [f"{what}; choose from {', '.join(allowed)} (- for descending)"]})
        return terms

    def filter_queryset(self, request, queryset, view):
        ordering = self.get_ordering(request, queryset, view) or []
        return queryset.order_by(*ordering, "-pk" if ordering and ordering[0].startswith("-") else "pk")

    def get_schema_operation_parameters(self, view):
        if not getattr(view, "ordering_fields", None):
            return []
        (parameter,) = super().get_schema_operation_parameters(view)
        fields = ", ".join(view.ordering_fields)
        parameter["description"] = f"Comma-separated fields of {fields}; a leading - sorts descending."
        return [parameter]


class ResearchWriteThrottle(UserRateThrottle):
    """Writes of the research API (registrations, imports, generation requests), per researcher:
    ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["research_write"]``; past it, 429 with ``Retry-After``."""

    scope = "research_write"

    def get_rate(self):
        # Read on each request, not once at import as DRF does, so a changed setting applies.
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def allow_request(self, request, view):
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
