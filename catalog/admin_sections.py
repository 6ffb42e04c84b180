"""Parts of an admin page that an app above adds, without the page's app importing it.

A lower app owns a page (the model version page, the training run page) and an ``AdminSections``
registry for it; a higher app registers a function into it from its ``AppConfig.ready()``. The
page calls every registered function with its object and shows what comes back under the
registered title; a function with nothing to say returns an empty string.

    lineage_columns  catalog's model page: one column of the lineage table, called with each
                     model of the chain (training: the run that trained it; evaluation: its
                     results against its parent)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.html import conditional_escape
from django.utils.safestring import SafeString


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    render: Callable[[Any], str]  # the object → safe HTML (format_html, render_to_string); plain text is escaped


@dataclass(frozen=True)
class Rendered:
    name: str
    title: str
    html: SafeString


class AdminSections:
    """The registry of one page: named sections in the order the apps registered them."""

    def __init__(self, page: str):
        self.page = page
        self._sections: dict[str, Section] = {}

    def register(self, name: str, *, title: str, render: Callable[[Any], str]) -> None:
        """Add (or, under the same name, replace: ``ready()`` may run more than once) a section."""
        self._sections[name] = Section(name=name, title=title, render=render)

    def sections(self) -> list[Section]:
        return list(self._sections.values())

    def render(self, obj) -> list[Rendered]:
        """Every section's HTML for ``obj``, empty ones included (a table column keeps its place)."""
        return [
            Rendered(name=section.name, title=section.title, html=conditional_escape(section.render(obj) or ""))
            for section in self._sections.values()
        ]


lineage_columns = AdminSections("model version lineage")
