"""Template filters that print report numbers the way the exported table does."""

from collections.abc import Mapping

from django import template

from evaluation.report_format import format_number, format_p, format_percent

register = template.Library()


@register.filter
def percent(rate):
    return format_percent(rate)


@register.filter
def pvalue(p):
    return format_p(p)


def _bounds(cell):
    """``(low, high)`` of a cell or interval dict, or None when it is undefined."""
    if not isinstance(cell, Mapping):
        return None
    low, high = cell.get("ci_low", cell.get("low")), cell.get("ci_high", cell.get("high"))
    return None if low is None or high is None else (low, high)


@register.filter
def interval(cell):
    """``[low, high]`` in percent from a cell or interval dict, or nothing when it is undefined."""
    bounds = _bounds(cell)
    return f"[{format_percent(bounds[0])}, {format_percent(bounds[1])}]" if bounds else ""


@register.filter
def number_interval(cell, digits=3):
    """``[low, high]`` as plain numbers (an agreement coefficient's interval), or nothing when undefined."""
    bounds = _bounds(cell)
    return f"[{format_number(bounds[0], digits)}, {format_number(bounds[1], digits)}]" if bounds else ""


@register.filter
def number(value, digits=3):
    return format_number(value, digits)


@register.filter
def get(mapping, key):
    return mapping.get(key) if isinstance(mapping, Mapping) else None
