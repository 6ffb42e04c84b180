"""Load benchmark of the annotation API on the real stack: gunicorn + PostgreSQL on loopback.

Creates its own database (dropped and re-created on each run), builds a pairwise round of
--items items with bulk inserts, starts gunicorn, and runs --annotators simulated annotators,
each in its own thread with a keep-alive connection, doing next + submit cycles over HTTP for
--duration seconds, with a think time between cycles as a person would have. Prints
judgments/s, p50/p99 latency per request, and the over-assignment count read from the
database afterwards (items with more than K judgments, or more judgments plus held leases
than K, or an annotator twice on one item).

    .venv/bin/python bench/annotation_load.py --items 100000 --annotators 200 --duration 60

This is a benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL URL whose server may create the bench database")
    parser.add_argument("--db-name", default="annotation_bench")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--annotators", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load after the warm-up")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--think-ms", type=float, default=1100.0,
                        help="mean pause between an annotator's cycles (uniform in [0.5, 1.5] x this)")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--server-side-binding", action="store_true",
                        help="psycopg server-side parameter binding (prepared statements) for the web processes")
    parser.add_argument("--reuse-db", action="store_true",
                        help="keep the database of an earlier run (its round and annotators) instead of rebuilding")
    return parser.parse_args()


def database_recreate(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def setup_data(args, media_root: Path) -> tuple[int, list[tuple[str, str]]]:
    """Migrate, build the round and the annotators; returns the round id and (sessionid, csrf) per annotator."""
    import django

    django.setup()
    if args.reuse_db:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return sessions_reuse(args)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.middleware.csrf import _get_new_csrf_string

    from annotation import services
    from annotation.models import ANNOTATORS_GROUP, Image, Prompt, PromptSet
    from training.models import ModelVersion

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    png = ROOT / "bench" / ".pixel.png"
    from PIL import Image as PILImage

    (media_root / "images").mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (64, 64), (120, 40, 200)).save(media_root / "images" / "bench.png")
    prompt_set = PromptSet.objects.create(name="bench")
    n_prompts = max(1, args.items // 100)
    prompts = Prompt.objects.bulk_create(
        [Prompt(prompt_set=prompt_set, external_id=f"p{n}", text=f"bench prompt {n}") for n in range(n_prompts)]
    )
    models = [ModelVersion.objects.create(name=f"bench-{x}", family="unet", local_path=f"/m/{x}") for x in "ab"]
    seeds = 100  # each (prompt, seed) gives one pair: n_prompts * 100 >= items
    images = Image.objects.bulk_create(
        [
            Image(prompt=p, model_version=m, seed=s, file="images/bench.png", width=64, height=64, sha256="0" * 64)
            for p in prompts for s in range(seeds) for m in models
        ],
        batch_size=5000,
    )
    specs = [
        services.ItemSpec(prompt_id=images[2 * n].prompt_id, image_ids=(images[2 * n].pk, images[2 * n + 1].pk))
        for n in range(args.items)
    ]
    round_ = services.round_create(name="bench", kind="pairwise", criterion="visual_flaws", k=args.k, items=specs,
                                   batch_size=5000)
    group = Group.objects.get(name=ANNOTATORS_GROUP)
    password = make_password("bench-password")
    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"bench{n:04d}", password=password) for n in range(args.annotators)])
    User.groups.through.objects.bulk_create([User.groups.through(user_id=u.pk, group_id=group.pk) for u in users])
    credentials = []
    for user in users:
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        credentials.append((session.session_key, _get_new_csrf_string()))
    from django.db import connection, connections

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics for the bulk-loaded tables
    connections.close_all()
    print(f"setup: {args.items} items, {args.annotators} annotators in {time.perf_counter() - t0:.1f} s", flush=True)
    return round_.pk, credentials


def sessions_reuse(args) -> tuple[int, list[tuple[str, str]]]:
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connections
    from django.middleware.csrf import _get_new_csrf_string

    from annotation.models import Round

    round_ = Round.objects.get(name="bench")
    users = list(get_user_model().objects.filter(username__startswith="bench").order_by("username")[: args.annotators])
    if len(users) < args.annotators:
        raise SystemExit(f"--reuse-db: the database has {len(users)} bench annotators, not {args.annotators}")
    credentials = []
    for user in users:
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        credentials.append((session.session_key, _get_new_csrf_string()))
    connections.close_all()
    return round_.pk, credentials


def service_time(port: int, round_id: int, credentials: tuple[str, str], cycles: int = 10) -> tuple[float, float]:
    """Median next and submit latency of one annotator alone, before the load: the per-request cost.

    Paced at 2 cycles/s so that the submission rate limit (2/s sustained by default) never answers instead.
    """
    client = Annotator(port=port, round_id=round_id, session_key=credentials[0], csrf=credentials[1], think_ms=0,
                       stop_at=0, measure_from=0, seed=0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(cycles):
        _, data = client.request(conn, "next", f"/api/annotate/rounds/{round_id}/next/", {})
        task = json.loads(data)["task"]
        client.request(conn, "submit", "/api/annotate/submit/", {
            "client_uuid": str(uuid.uuid4()), "lease": task["lease"], "elapsed_ms": 1,
            "answer": {"outcome": "tie"},
        })
        time.sleep(0.5)
    conn.close()
    return statistics.median(client.latencies["next"]), statistics.median(client.latencies["submit"])


class Annotator(threading.Thread):
    def __init__(self, *, port, round_id, session_key, csrf, think_ms, stop_at, measure_from, seed):
        super().__init__(daemon=True)
        self.port, self.round_id = port, round_id
        self.headers = {
            "Content-Type": "application/json", "X-CSRFToken": csrf, "Host": "127.0.0.1",
            "Cookie": f"sessionid={session_key}; csrftoken={csrf}",
        }
        self.think_ms, self.stop_at, self.measure_from = think_ms, stop_at, measure_from
        self.rng = random.Random(seed)
        self.latencies = {"next": [], "submit": []}
        self.judgments = 0
        self.errors: dict[str, int] = {}

    def request(self, conn, name, path, body):
        started = time.perf_counter()
        conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if started >= self.measure_from:
            self.latencies[name].append(elapsed)
        return response.status, data

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        time.sleep(self.rng.random() * self.think_ms / 1000)  # do not start in lockstep
        while time.perf_counter() < self.stop_at:
            try:
                status, data = self.request(conn, "next", f"/api/annotate/rounds/{self.round_id}/next/", {})
                if status != 200:
                    self.errors[f"next {status}"] = self.errors.get(f"next {status}", 0) + 1
                    continue
                task = json.loads(data)["task"]
                if task is None:
                    return
                answer = {"outcome": "win", "winner": self.rng.choice(task["images"])["id"]}
                started = time.perf_counter()
                status, data = self.request(conn, "submit", "/api/annotate/submit/", {
                    "client_uuid": str(uuid.uuid4()), "lease": task["lease"], "elapsed_ms": 1000, "answer": answer,
                })
                if status == 201:
                    if started >= self.measure_from:
                        self.judgments += 1
                else:
                    self.errors[f"submit {status}"] = self.errors.get(f"submit {status}", 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            time.sleep(self.think_ms / 1000 * self.rng.uniform(0.5, 1.5))
        conn.close()


def wait_for_server(port: int, deadline: float):
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/accounts/login/")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("gunicorn did not answer in time")


def over_assignment(round_id: int, k: int) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT item_id FROM annotation_judgment WHERE round_id = %s AND undone_at IS NULL"
            " GROUP BY item_id HAVING count(*) > %s) t", [round_id, k])
        over_k = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM annotation_item i WHERE i.round_id = %s AND ("
            " (SELECT count(*) FROM annotation_judgment j WHERE j.item_id = i.id AND j.undone_at IS NULL)"
            " + (SELECT count(*) FROM annotation_lease l WHERE l.item_id = i.id AND l.state = 'held')) > %s",
            [round_id, k])
        over_slots = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM annotation_judgment WHERE round_id = %s AND undone_at IS NULL"
            " GROUP BY item_id, annotator_id HAVING count(*) > 1) t", [round_id])
        twice = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM annotation_judgment WHERE round_id = %s", [round_id])
        stored = cursor.fetchone()[0]
    return {"items_over_k": over_k, "items_over_k_with_leases": over_slots, "annotator_twice": twice, "stored": stored}


def process_cpu_seconds(pids) -> float:
    """utime + stime of the given processes, from /proc (Linux)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def server_pids(server_pid: int, server_url: str, db_name: str) -> tuple[list[int], list[int]]:
    """The gunicorn master and workers, and the PostgreSQL backends connected to the bench database."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server_pid:
            children.append(int(stat.parent.name))
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        backends = [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [db_name])]
    return [server_pid, *children], backends


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="annotation-bench-"))
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": (args.server_url.rsplit("/", 1)[0] + "/" + args.db_name) if args.reuse_db
        else database_recreate(args.server_url, args.db_name),
        "DJANGO_DEBUG": "0",
        "VAR_DIR": str(work / "var"),
        "MEDIA_ROOT": str(work / "media"),
        "LOG_LEVEL": "WARNING",
    })
    sys.path.insert(0, str(ROOT))
    round_id, credentials = setup_data(args, work / "media")
    if args.server_side_binding:
        os.environ["DATABASE_URL"] += "?server_side_binding=true"
    try:
        socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
        raise SystemExit(f"port {args.port} is taken (another benchmark still running?); pass --port")
    except OSError:
        pass
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        [str(gunicorn), "config.wsgi:application", "--bind", f"127.0.0.1:{args.port}", "--workers", str(args.workers),
         "--worker-class", "gthread", "--threads", str(args.threads), "--keep-alive", "30", "--log-level", "warning"],
        cwd=ROOT, env=os.environ.copy(), start_new_session=True,
    )
    try:
        wait_for_server(args.port, time.time() + 60)
        alone_next, alone_submit = service_time(args.port, round_id, credentials[0])
        now = time.perf_counter()
        measure_from = now + args.warmup
        stop_at = measure_from + args.duration
        clients = [
            Annotator(port=args.port, round_id=round_id, session_key=key, csrf=csrf, think_ms=args.think_ms,
                      stop_at=stop_at, measure_from=measure_from, seed=n)
            for n, (key, csrf) in enumerate(credentials)
        ]
        for client in clients:
            client.start()
        time.sleep(max(0.0, measure_from - time.perf_counter()))
        web_pids, db_pids = server_pids(server.pid, args.server_url, args.db_name)
        cpu_before = process_cpu_seconds(web_pids), process_cpu_seconds(db_pids)
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu_after = process_cpu_seconds(web_pids), process_cpu_seconds(db_pids)
        db_pids_stable = set(server_pids(server.pid, args.server_url, args.db_name)[1]) == set(db_pids)
        for client in clients:
            client.join(timeout=60)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    judgments = sum(c.judgments for c in clients)
    next_lat = [x for c in clients for x in c.latencies["next"]]
    submit_lat = [x for c in clients for x in c.latencies["submit"]]
    every = next_lat + submit_lat
    errors: dict[str, int] = {}
    for c in clients:
        for key, n in c.errors.items():
            errors[key] = errors.get(key, 0) + n
    checks = over_assignment(round_id, args.k)
    ms = 1000
    print(f"items {args.items}, K {args.k}, annotators {args.annotators}, think {args.think_ms:.0f} ms, "
          f"gunicorn {args.workers}x{args.threads} gthread, {os.cpu_count()} CPUs, "
          f"server-side binding {'on' if args.server_side_binding else 'off'}")
    print(f"one annotator alone: next {alone_next * ms:.1f} ms, submit {alone_submit * ms:.1f} ms (median of 10)")
    print(f"load average     {os.getloadavg()}")
    print(f"judgments/s      {judgments / args.duration:.1f}  ({judgments} in {args.duration:.0f} s)")
    print(f"latency all      p50 {percentile(every, .5) * ms:.1f} ms  p99 {percentile(every, .99) * ms:.1f} ms"
          f"  mean {statistics.fmean(every) * ms if every else float('nan'):.1f} ms  ({len(every)} requests)")
    print(f"latency next     p50 {percentile(next_lat, .5) * ms:.1f} ms  p99 {percentile(next_lat, .99) * ms:.1f} ms")
    print(f"latency submit   p50 {percentile(submit_lat, .5) * ms:.1f} ms  p99 {percentile(submit_lat, .99) * ms:.1f} ms")
    print(f"over-assignment  {checks['items_over_k']} items over K, {checks['items_over_k_with_leases']} over K "
          f"counting held leases, {checks['annotator_twice']} annotator-twice; {checks['stored']} judgments stored")
    requests_done = max(1, len(every))
    db_cpu = (f"{(cpu_after[1] - cpu_before[1]) / requests_done * ms:.1f} ms" if db_pids_stable
              else "n/a (connections were recycled during the window)")
    print(f"CPU per request  gunicorn {(cpu_after[0] - cpu_before[0]) / requests_done * ms:.1f} ms, "
          f"PostgreSQL backends {db_cpu} (over the measured window)")
    print(f"errors           {errors or 'none'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
