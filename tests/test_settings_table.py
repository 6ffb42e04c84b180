"""Every setting the code reads is listed in the README's settings table."""

from __future__ import annotations

import re
from pathlib import Path

from annotation import conf

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("annotation", "catalog", "config", "evaluation", "outbox", "training", "toyworld")
# Read by the code but set by another tool, not by whoever runs the site.
SET_BY_OTHERS = {"WORLD_SIZE": "set by accelerate launch for each process", "RANK": "likewise"}

READS = re.compile(
    r"""(?:os\.environ\.get|os\.getenv|env_bool|env_list)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
    r"""|getattr\(\s*settings\s*,\s*["']([A-Z][A-Z0-9_]*)["']"""
)


def settings_read() -> dict[str, str]:
    """Setting name -> the first file that reads it."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for match in READS.finditer(path.read_text(encoding="utf-8")):
                name = next(group for group in match.groups() if group)
                found.setdefault(name, str(path.relative_to(ROOT)))
    for name in conf._DEFAULTS:  # read through annotation.conf.setting(NAME)
        found.setdefault(name, "annotation/conf.py")
    return found


def settings_documented() -> set[str]:
    """The names in the first column of the README's settings table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Settings come from the environment"):]
    names: set[str] = set()
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            first = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)(?:=[^`]*)?`", first))
        elif names and line.strip() and not line.startswith("|"):
            break  # the table has ended
    return names


def test_the_scan_finds_settings_of_every_kind():
    found = settings_read()
    # os.environ.get, env_list, getattr(settings, ...), annotation.conf: the scan is not empty-handed.
    for name in ("IMAGE_MAX_PIXELS", "ALLOWED_HOSTS", "EVALUATION_BOOTSTRAP_RESAMPLES", "ANNOTATION_SUBMIT_RATE",
                 "ANNOTATION_MAX_LEASES", "DATABASE_PREPARE_THRESHOLD"):
        assert name in found


def test_every_setting_read_is_in_the_readme_table():
    documented = settings_documented()
    missing = {name: where for name, where in settings_read().items()
               if name not in documented and name not in SET_BY_OTHERS}
    assert not missing, f"README settings table lacks: {missing}"


def test_the_table_lists_no_setting_that_nothing_reads():
    stale = settings_documented() - settings_read().keys()
    assert not stale, f"README settings table lists settings the code never reads: {sorted(stale)}"
