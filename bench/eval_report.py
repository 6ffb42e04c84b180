"""Wall time of an evaluation report on the production path, and of a warm report page view.

Builds its own PostgreSQL database (dropped and re-created; --db-name) with an evaluation of
--models models on --prompts prompts (two alignment questions each, the second depending on
the first): every pair of models compared on visual flaws and visual appeal, --votes simulated
judgments per item, the aggregates recomputed by `annotation.services.round_aggregate`. Then:

- read: `evaluation.selectors.evaluation_data`, the report's queries;
- report: `evaluation.reports.report_from_data` with --resamples bootstrap resamples, the
  statistics of every number the page shows (the first run is the cold one; best of --repeat);
- task: `evaluation.services.report_refresh`, what the `default` worker runs (read, compute, store);
- page: GET /evaluation/<id>/ with the report stored and current (in-process test client, no
  HTTP server), --views times: the request path of every page view.

Setting up the data is timed separately and is not part of any result; with --reuse-db a
second run times the database the first one built (for example, build first, then pause other
work on the machine and time).

    .venv/bin/python bench/eval_report.py [--models 5] [--prompts 600] [--votes 5] [--resamples 10000]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.annotation_load import database_recreate  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL URL whose server may create the bench database")
    parser.add_argument("--db-name", default="eval_report_bench")
    parser.add_argument("--models", type=int, default=5, help="models; comparisons = models·(models−1)/2")
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--votes", type=int, default=5, help="K, judgments per item")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="report the fastest of this many report runs")
    parser.add_argument("--views", type=int, default=20, help="warm page views to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-db", action="store_true",
                        help="time the evaluation an earlier run built in --db-name instead of building one")
    return parser.parse_args()


def build(args):
    """The evaluation, its judgments and aggregates; returns the evaluation."""
    from django.core.management import call_command

    from annotation.models import Round
    from annotation.services.aggregation import round_aggregate
    from evaluation.services import evaluation_start
    from tests.evaluation.builders import annotators, bulk_judgments, bulk_prompt_set

    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(args.seed)
    names = [f"model_{index}" for index in range(args.models)]
    quality = dict(zip(names, np.linspace(-0.6, 0.6, args.models)))
    prompt_set, versions, prompts = bulk_prompt_set(
        models=names, n_prompts=args.prompts, seed=args.seed, set_name="bench", with_questions=True
    )
    evaluation = evaluation_start(
        model_versions=versions, prompt_set=prompt_set, from_existing=True, k=args.votes, seed=args.seed
    ).evaluation
    people = annotators(args.votes)
    name_of = {version.pk: version.name for version in versions}
    labels = np.array(["A", "tie", "B"])
    for round_ in evaluation.annotation_rounds.all():
        models_of: dict[int, list[int]] = {}
        for item_id, model_id in round_.items.order_by("item_images__order").values_list(
            "pk", "item_images__image__model_version_id"
        ):
            models_of.setdefault(item_id, []).append(model_id)
        votes_by_item = {}
        for item_id, models in models_of.items():
            if round_.kind == Round.Kind.PAIRWISE:
                a, b = (quality[name_of[m]] for m in models)
                p_a = 1 / (1 + math.exp(b - a))
                # Each prompt has its own true outcome; annotators agree with it 70% of the time.
                truth = rng.choice(3, p=[0.6 * p_a, 0.4, 0.6 * (1 - p_a)])
                noise = rng.integers(0, 3, size=args.votes)
                votes_by_item[item_id] = labels[np.where(rng.random(args.votes) < 0.7, truth, noise)].tolist()
            else:
                p_yes = 0.75 + 0.1 * quality[name_of[models[0]]]
                votes_by_item[item_id] = [tuple(bool(v) for v in rng.random(2) < p_yes) for _ in range(args.votes)]
        bulk_judgments(round_, votes_by_item, people)
        round_aggregate(round_=round_)
    return evaluation


def main() -> None:
    args = parse_args()
    if args.reuse_db:
        os.environ["DATABASE_URL"] = args.server_url.rsplit("/", 1)[0] + "/" + args.db_name
    else:
        os.environ["DATABASE_URL"] = database_recreate(args.server_url, args.db_name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import Client
    from django.test.utils import setup_test_environment

    from evaluation.reports import report_from_data
    from evaluation.selectors import evaluation_data
    from evaluation.services import report_latest, report_refresh
    from tests.factories import ResearcherFactory

    settings.EVALUATION_BOOTSTRAP_RESAMPLES = args.resamples
    comparisons = args.models * (args.models - 1) // 2
    print(
        f"{comparisons} comparisons × {args.prompts} prompts × {args.votes} votes, "
        f"{args.resamples} bootstrap resamples"
    )
    if args.reuse_db:
        from evaluation.models import EvaluationRound, StoredReport

        evaluation = EvaluationRound.objects.select_related("prompt_set").get()
        StoredReport.objects.filter(evaluation=evaluation).delete()  # the task below computes it afresh
    else:
        start = time.perf_counter()
        evaluation = build(args)
        print(f"setup (not a result): {time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    data = evaluation_data(evaluation=evaluation)
    print(f"read: evaluation_data {time.perf_counter() - start:.3f} s")

    runs = []
    for run in range(args.repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        report = report_from_data(
            data, confidence=0.95, n_resamples=args.resamples, seed=run, p_adjust="holm", power=0.8
        )
        runs.append(time.perf_counter() - start)
        # CPU time (all threads) shows how much of the wall time other processes took.
        print(f"report run {run + 1}{' (cold)' if run == 0 else ''}: {runs[-1]:.3f} s wall, "
              f"{time.process_time() - cpu_start:.3f} s CPU")
    first = report.table[0]
    print(
        f"check: {first['model_a']} vs {first['model_b']} visual flaws n={first['visual_flaws']['n']}, "
        f"A wins {first['visual_flaws']['a_wins']['rate']:.3f}; leaderboards: {', '.join(report.leaderboards)}"
    )

    start = time.perf_counter()
    stored = report_refresh(evaluation=evaluation)
    print(f"task: report_refresh {time.perf_counter() - start:.3f} s (of which compute {stored.compute_seconds:.3f} s)")
    assert report_latest(evaluation=evaluation).fresh

    setup_test_environment()
    client = Client()
    client.force_login(ResearcherFactory())
    url = f"/evaluation/{evaluation.pk}/"
    client.get(url)  # the process's first request loads templates and URL modules
    views = []
    for _ in range(args.views):
        start = time.perf_counter()
        response = client.get(url)
        views.append(time.perf_counter() - start)
        assert response.status_code == 200 and b'id="paper-table"' in response.content
        assert b"report_refresh.js" not in response.content  # current: served, not recomputed
    views.sort()
    print(
        f"page: warm view median {1000 * statistics.median(views):.1f} ms, "
        f"p90 {1000 * views[int(0.9 * (len(views) - 1))]:.1f} ms, max {1000 * views[-1]:.1f} ms "
        f"({len(response.content) / 1024:.0f} KiB of HTML)"
    )
    print(f"best report wall time: {min(runs):.3f} s (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
