"""Load benchmark of the annotation API on the real stack: gunicorn + PostgreSQL on loopback.

Creates its own database (dropped and re-created on each run), builds a pairwise round of
--items items with bulk inserts, starts gunicorn, and runs --annotators simulated annotators
as asyncio tasks in this one process (one keep-alive HTTP/1.1 connection each, reopened when
the server closes it), for --duration seconds. Each annotator asks `next` once, then loops:
think (uniform in 0.5-1.5 x --think-ms, the time a person looks at the item), submit with
`"next": true` (the UI's one round trip per judgment), show the task that came back.
--protocol two_requests sends `next` and `submit` separately instead. Prints judgments/s,
p50/p99 latency per request, the over-assignment count read from the database afterwards
(items with more than K judgments, or more judgments plus held leases than K, or an
annotator twice on one item), and the CPU of gunicorn, PostgreSQL and this load generator.

    .venv/bin/python bench/annotation_load.py --items 100000 --annotators 200 --duration 60

This is a benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
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
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent



def _sessions(users) -> list[tuple[str, str]]:
    """A logged-in session (key, CSRF token) per bench annotator, as the login view would make it."""
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore
    from django.middleware.csrf import _get_new_csrf_string

    credentials = []
    for user in users:
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = settings.AUTHENTICATION_BACKENDS[0]
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        credentials.append((session.session_key, _get_new_csrf_string()))
    return credentials

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
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (gthread only)")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"],
                        help="sync (one request per process at a time; measured faster here: no GIL contention)")
    parser.add_argument("--protocol", default="submit_next", choices=["submit_next", "two_requests"],
                        help="submit_next: one request per judgment (submit with next: true, as the UI); "
                             "two_requests: next then submit (the API before that option)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--server-side-binding", action="store_true",
                        help="psycopg server-side parameter binding (prepared statements) for the web processes")
    parser.add_argument("--prepare-threshold", type=int, default=None,
                        help="DATABASE_PREPARE_THRESHOLD for gunicorn: prepared statements after N runs")
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
    from django.core.management import call_command

    from annotation.models import ANNOTATORS_GROUP
    from annotation.services import rounds
    from catalog.models import Image, ModelVersion, Prompt, PromptSet

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
        rounds.ItemSpec(prompt_id=images[2 * n].prompt_id, image_ids=(images[2 * n].pk, images[2 * n + 1].pk))
        for n in range(args.items)
    ]
    round_ = rounds.round_create(name="bench", kind="pairwise", criterion="visual_flaws", k=args.k, items=specs,
                                   batch_size=5000)
    group = Group.objects.get(name=ANNOTATORS_GROUP)
    password = make_password("bench-password")
    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"bench{n:04d}", password=password) for n in range(args.annotators)])
    User.groups.through.objects.bulk_create([User.groups.through(user_id=u.pk, group_id=group.pk) for u in users])
    credentials = _sessions(users)
    from django.db import connection, connections

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics for the bulk-loaded tables
    connections.close_all()
    print(f"setup: {args.items} items, {args.annotators} annotators in {time.perf_counter() - t0:.1f} s", flush=True)
    return round_.pk, credentials


def sessions_reuse(args) -> tuple[int, list[tuple[str, str]]]:
    from django.contrib.auth import get_user_model
    from django.db import connections

    from annotation.models import Round

    round_ = Round.objects.get(name="bench")
    users = list(get_user_model().objects.filter(username__startswith="bench").order_by("username")[: args.annotators])
    if len(users) < args.annotators:
        raise SystemExit(f"--reuse-db: the database has {len(users)} bench annotators, not {args.annotators}")
    credentials = _sessions(users)
    connections.close_all()
    return round_.pk, credentials


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams: a few microseconds of client CPU per request."""

    def __init__(self, port: int, headers: dict[str, str]):
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if "content-length" not in fields:
                raise ConnectionError(f"no Content-Length in the answer to {path}")
            payload = await self.reader.readexactly(int(fields["content-length"]))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Annotator:
    """One simulated annotator: its own connection and session; next once, then submit (+ next) cycles.

    ``protocol`` ``submit_next`` sends one request per judgment (``"next": true`` on submit, as the
    UI does); ``two_requests`` sends ``next`` and ``submit`` separately (the API before that option).
    """

    def __init__(self, *, port, round_id, session_key, csrf, think_ms, stop_at, measure_from, seed, protocol):
        self.round_id = round_id
        self.connection = Connection(port, {
            "Host": "127.0.0.1", "Content-Type": "application/json", "X-CSRFToken": csrf,
            "Cookie": f"sessionid={session_key}; csrftoken={csrf}",
        })
        self.think_ms, self.stop_at, self.measure_from = think_ms, stop_at, measure_from
        self.protocol = protocol
        self.rng = random.Random(seed)
        self.latencies: dict[str, list[float]] = {"next": [], "submit": []}
        self.judgments = 0
        self.errors: dict[str, int] = {}

    def error(self, key: str):
        self.errors[key] = self.errors.get(key, 0) + 1

    async def request(self, name, path, body):
        started = time.perf_counter()
        status, data = await self.connection.post(path, body)
        if started >= self.measure_from:
            self.latencies[name].append(time.perf_counter() - started)
        return status, data

    async def next_task(self):
        status, data = await self.request("next", f"/api/annotate/rounds/{self.round_id}/next/", {})
        if status != 200:
            self.error(f"next {status}")
            return None
        return json.loads(data)["task"]

    async def run(self):
        await asyncio.sleep(self.rng.random() * self.think_ms / 1000)  # do not start in lockstep
        task = None
        while time.perf_counter() < self.stop_at:
            try:
                if task is None:
                    task = await self.next_task()
                    if task is None:
                        return
                await asyncio.sleep(self.think_ms / 1000 * self.rng.uniform(0.5, 1.5))  # looking at the item
                body = {
                    "client_uuid": str(uuid.uuid4()), "lease": task["lease"], "elapsed_ms": 1000,
                    "answer": {"outcome": "win", "winner": self.rng.choice(task["images"])["id"]},
                }
                if self.protocol == "submit_next":
                    body["next"] = True
                started = time.perf_counter()
                status, data = await self.request("submit", "/api/annotate/submit/", body)
                task = None
                if status == 201:
                    if started >= self.measure_from:
                        self.judgments += 1
                    if self.protocol == "submit_next":
                        task = json.loads(data)["next"]
                        if task is None:
                            return
                else:
                    self.error(f"submit {status}")
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                self.error(type(exc).__name__)
                task = None
        self.connection.close()


async def service_time(port: int, round_id: int, credentials: tuple[str, str], protocol: str,
                       cycles: int = 10) -> float:
    """Median latency of one annotator's submit request alone, before the load: the per-request cost."""
    client = Annotator(port=port, round_id=round_id, session_key=credentials[0], csrf=credentials[1], think_ms=500,
                       stop_at=float("inf"), measure_from=0, seed=0, protocol=protocol)
    task = None
    for _ in range(cycles):
        task = task or await client.next_task()
        body = {"client_uuid": str(uuid.uuid4()), "lease": task["lease"], "elapsed_ms": 1, "answer": {"outcome": "tie"}}
        if protocol == "submit_next":
            body["next"] = True
        _, data = await client.request("submit", "/api/annotate/submit/", body)
        task = json.loads(data).get("next")
        await asyncio.sleep(0.5)  # within the submission rate limit (2/s sustained by default)
    client.connection.close()
    return statistics.median(client.latencies["submit"])


async def load_run(clients: list[Annotator], measure_from: float, stop_at: float, on_window) -> None:
    """Run every annotator; ``on_window("start"|"stop")`` is called at the measured window's edges."""
    runners = [asyncio.create_task(client.run()) for client in clients]
    await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
    on_window("start")
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    on_window("stop")
    await asyncio.wait(runners, timeout=60)


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
        # Workers keep their PostgreSQL backends through the run, so that the backends' CPU can be read.
        "DATABASE_CONN_MAX_AGE": "3600",
    })
    sys.path.insert(0, str(ROOT))
    round_id, credentials = setup_data(args, work / "media")
    if args.server_side_binding:
        os.environ["DATABASE_URL"] += "?server_side_binding=true"
    if args.prepare_threshold is not None:
        os.environ["DATABASE_PREPARE_THRESHOLD"] = str(args.prepare_threshold)
    try:
        socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
        raise SystemExit(f"port {args.port} is taken (another benchmark still running?); pass --port")
    except OSError:
        pass
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        [str(gunicorn), "config.wsgi:application", "--bind", f"127.0.0.1:{args.port}", "--workers", str(args.workers),
         "--worker-class", args.worker_class, "--threads", str(args.threads), "--keep-alive", "30", "--log-level", "warning"],
        cwd=ROOT, env=os.environ.copy(), start_new_session=True,
    )
    try:
        wait_for_server(args.port, time.time() + 60)
        alone_submit = asyncio.run(service_time(args.port, round_id, credentials[0], args.protocol))
        now = time.perf_counter()
        measure_from = now + args.warmup
        stop_at = measure_from + args.duration
        clients = [
            Annotator(port=args.port, round_id=round_id, session_key=key, csrf=csrf, think_ms=args.think_ms,
                      stop_at=stop_at, measure_from=measure_from, seed=n, protocol=args.protocol)
            for n, (key, csrf) in enumerate(credentials)
        ]
        cpu = {}

        def on_window(edge):
            if edge == "start":
                cpu["pids"] = server_pids(server.pid, args.server_url, args.db_name)
            web_pids, db_pids = cpu["pids"]
            cpu[edge] = (process_cpu_seconds(web_pids), process_cpu_seconds(db_pids), sum(os.times()[:2]))

        asyncio.run(load_run(clients, measure_from, stop_at, on_window))
        cpu_before, cpu_after = cpu["start"], cpu["stop"]
        db_pids_stable = set(server_pids(server.pid, args.server_url, args.db_name)[1]) == set(cpu["pids"][1])
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
          f"gunicorn {args.workers}x{args.threads} {args.worker_class}, protocol {args.protocol}, {os.cpu_count()} CPUs, "
          f"server-side binding {'on' if args.server_side_binding else 'off'}, prepare threshold {args.prepare_threshold}")
    print(f"one annotator alone: submit {'+ next ' if args.protocol == 'submit_next' else ''}{alone_submit * ms:.1f} ms"
          " (median of 10)")
    print(f"load average     {os.getloadavg()}")
    print(f"judgments/s      {judgments / args.duration:.1f}  ({judgments} in {args.duration:.0f} s)")
    print(f"latency all      p50 {percentile(every, .5) * ms:.1f} ms  p99 {percentile(every, .99) * ms:.1f} ms"
          f"  mean {statistics.fmean(every) * ms if every else float('nan'):.1f} ms  ({len(every)} requests)")
    print(f"latency next     p50 {percentile(next_lat, .5) * ms:.1f} ms  p99 {percentile(next_lat, .99) * ms:.1f} ms")
    print(f"latency submit   p50 {percentile(submit_lat, .5) * ms:.1f} ms  p99 {percentile(submit_lat, .99) * ms:.1f} ms")
    print(f"over-assignment  {checks['items_over_k']} items over K, {checks['items_over_k_with_leases']} over K "
          f"counting held leases, {checks['annotator_twice']} annotator-twice; {checks['stored']} judgments stored")
    requests_done = max(1, len(every))
    web_s, db_s, client_s = (after - before for after, before in zip(cpu_after, cpu_before))
    db_cpu = (f"{db_s / requests_done * ms:.1f} ms" if db_pids_stable
              else "n/a (connections were recycled during the window)")
    print(f"CPU per request  gunicorn {web_s / requests_done * ms:.1f} ms, PostgreSQL backends {db_cpu}, "
          f"load generator {client_s / requests_done * ms:.2f} ms (over the measured window)")
    print(f"CPU share        gunicorn {web_s / args.duration:.2f} cores, PostgreSQL {db_s / args.duration:.2f} cores, "
          f"load generator {client_s / args.duration:.2f} cores, of {os.cpu_count()}")
    print(f"errors           {errors or 'none'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
