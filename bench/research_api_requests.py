"""What the research API's long operations would cost if a request did them, and what it does instead.

Prints one line per measurement (seconds, wall), each timed twice (the second with warm caches), on a
throw-away test database of the configured DATABASE_URL:

- a DSG-1k prompt import: the request's check (the parse) against the whole import (now a task);
- an evaluation of all 1,632 PartiPrompts × 2 models: what the request does (jobs made, none filled);
- a round's export of N winner/loser pairs (64 px images): now a task, before a run on the round queues.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench python bench/research_api_requests.py --pairs 500
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(label: str, fn, repeats: int = 2):
    for attempt in range(repeats):
        started = time.perf_counter()
        result = fn()
        print(f"{label} ({'warm' if attempt else 'first'}): {time.perf_counter() - started:.2f} s", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=500, help="winner/loser pairs in the exported round")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test.runner import DiscoverRunner

    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="bench-media-")
    settings.ARTIFACTS_ROOT = tempfile.mkdtemp(prefix="bench-artifacts-")
    settings.ANNOTATION_SUBMIT_RATE, settings.ANNOTATION_SUBMIT_BURST = 1e9, 10**9  # synthetic judges, no limit
    runner = DiscoverRunner(verbosity=0, interactive=False)
    databases = runner.setup_databases()
    try:
        from annotation.exports import preferences_export
        from catalog import services
        from evaluation.services import evaluation_start
        from tests.annotation.builders import pairwise_round
        from tests.evaluation.builders import annotate_round, annotators
        from tests.factories import ModelVersionFactory

        dsg = REPO / "data/prompts/dsg1k/dsg-1k-anns.csv"
        timed("DSG-1k: the request's check (parse)", lambda: services.prompts_check(path=dsg, set_name="dsg"))
        timed("DSG-1k: the whole import (the task)", lambda: services.prompts_import(path=dsg, set_name="dsg"))

        parti = services.prompts_import(path=REPO / "data/prompts/partiprompts/PartiPrompts.tsv", set_name="parti")
        a, b = ModelVersionFactory(name="a"), ModelVersionFactory(name="b")
        counter = iter(range(100))
        timed(f"evaluation of {parti.prompt_set.prompts.count()} prompts x 2 models: the request",
              lambda: evaluation_start(model_versions=[a, b], prompt_set=parti.prompt_set, name=f"e{next(counter)}",
                                       rounds_now=False))

        round_ = pairwise_round(n_items=args.pairs, k=3)
        annotate_round(round_, annotators(3), lambda task, person: {
            "outcome": "win", "winner": task.item.images()[0].public_id})
        export = timed(f"export of a round of {args.pairs} pairs (the task)", lambda: preferences_export(round_=round_))
        print(f"  ({export.pairs} pairs exported)")
    finally:
        runner.teardown_databases(databases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
