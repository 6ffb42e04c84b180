"""A whole study over the research API: register a model, import prompts, train a round on them, read the report.

    python docs/examples/research_study.py --server https://lab.example --token 9944b0… \\
        --model-path /shared/models/toy-sd --prompts toy-train.jsonl --chart report.png

Every step is an HTTP request (`requests`); nothing here imports the project. The one step that is not
HTTP is people's: the evaluation's rounds are judged by annotators in the browser while this waits.
See docs/research-api.md, "A whole study from a script".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import requests


class Refused(Exception):
    """The API said no (a 4xx): its one-sentence ``detail`` and machine-readable ``code``."""


class ResearchAPI:
    def __init__(self, server: str, token: str, *, poll: float, timeout: float):
        self.base = server.rstrip("/") + "/api/research/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.poll, self.deadline = poll, time.monotonic() + timeout

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        url = urljoin(self.base, path)  # a path under /api/research/, a Location, or a page's full `next`
        answer = self.session.request(method, url, timeout=600, **kwargs)
        if answer.status_code == 429:  # throttled: wait as told, once per refusal
            self.sleep(float(answer.headers.get("Retry-After", self.poll)))
            return self.request(method, path, **kwargs)
        if answer.status_code >= 400:
            body = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else {}
            field = f" (field {body['field']})" if body.get("field") else ""
            raise Refused(f"{method} {url}: {answer.status_code} {body.get('code', '')}{field}: "
                          f"{body.get('detail', answer.text[:200])}")
        return answer

    def get(self, path: str, **kwargs) -> dict:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def sleep(self, seconds: float) -> None:
        if time.monotonic() + seconds > self.deadline:
            raise TimeoutError("gave up waiting (--timeout)")
        time.sleep(seconds)

    def wait(self, path: str, done, *, say=None, **kwargs) -> requests.Response:
        """GET ``path`` until ``done(answer)``; a 202 is not there yet: ask again after its Retry-After.
        ``say(answer)`` is a line of progress, printed when it changes."""
        said = None
        while True:
            answer = self.request("GET", path, **kwargs)
            if answer.status_code != 202 and done(answer):
                return answer
            if say is not None and (line := say(answer)) != said:
                print(f"  {line}")
                said = line
            self.sleep(float(answer.headers.get("Retry-After", self.poll)))


def judged(api: ResearchAPI, round_id: int) -> bool:
    """Every item of the round has its K judgments (or the researcher closed the round)."""
    round_ = api.get(f"rounds/{round_id}/")
    if round_["status"] == "closed":
        return True
    page = f"rounds/{round_id}/items/"
    while page:
        items = api.get(page)
        if any(item["judgments"] < round_["k"] for item in items["results"] if not item["is_gold"]):
            return False
        page = items["next"]
    return True


def progress(stage: dict | None) -> str:
    return f"{stage['done']}/{stage['total']} {stage['what']}" if stage else ""


def study(args) -> None:
    api = ResearchAPI(args.server, args.token, poll=args.poll, timeout=args.timeout)

    # 1. The base model, registered by its diffusers directory on the server (models are too large to upload).
    model = api.post("models/", json={"name": args.model_name, "path": args.model_path}).json()
    print(f"model {model['id']} '{model['name']}': {model['pipeline_class']}")

    # 2. The prompt set, uploaded; importing the same file again changes nothing.
    with open(args.prompts, "rb") as prompts:
        queued = api.post("prompt-sets/import/", files={"file": prompts}, data={"set": args.prompt_set})
    imported = api.wait(queued.headers["Location"], lambda answer: answer.json()["status"] in ("succeeded", "failed"))
    if imported.json()["status"] == "failed":
        raise SystemExit(f"prompt import: {imported.json()['error']['detail']}")
    prompt_set = api.get(f"prompt-sets/{imported.json()['result']['prompt_set_id']}/")
    print(f"prompt set '{prompt_set['name']}': {prompt_set['prompt_count']} prompts")

    # 3. A training round: images of the base, a best/worst round over them, pairs, a SimPO run with the pixel
    #    term, the new model, and its evaluation against the base, each stage started by the server.
    body = {"base_model": model["name"], "prompt_set": args.prompt_set, "method": "simpo",
            "pixel_weight": args.pixel_weight, "limit": args.limit, "evaluate_limit": args.limit,
            "images_per_prompt": args.images_per_prompt, "k": args.k, "config_file": args.config_file,
            "overrides": args.set,
            # Synthetic annotators judge the best/worst round as it opens, so that this example runs
            # unattended. A real study leaves this out: people judge the round in the browser meanwhile.
            "simulated_annotators": "noisy_oracle"}
    started = api.post("training-rounds/", json={key: value for key, value in body.items() if value is not None})
    print(f"training round {started.json()['id']} '{started.json()['name']}' started")
    training_round = api.wait(
        started.headers["Location"], lambda answer: answer.json()["stage"] in ("done", "failed"),
        say=lambda answer: f"{answer.json()['stage']}: {progress(answer.json()['progress'])}",
    ).json()
    if training_round["stage"] == "failed":
        raise Refused(f"round failed while {training_round['failed_stage']}: {training_round['error']}")
    print(f"new model '{training_round['output_model']}' from {training_round['pairs']} pairs")

    # 4. Its evaluation: the new model (Model A) against the base; the rounds open once its images are made.
    found = api.get("evaluations/", params={"batch": training_round["evaluation_batch"]})["results"]
    evaluation = api.wait(f"evaluations/{found[0]['id']}/", lambda answer: answer.json()["annotation_rounds"]).json()
    print(f"evaluation {evaluation['id']} '{evaluation['name']}': rounds {evaluation['annotation_rounds']}")

    # 5. Not HTTP: annotators judge the rounds in the browser (/annotate/…); this only waits for them.
    for round_id in evaluation["annotation_rounds"]:
        while not judged(api, round_id):
            api.sleep(api.poll)
    print("every item judged")

    # 6. The report, once it counts every judgment (a stale one is served while a worker computes the new one).
    def fresh(answer):
        return answer.headers["X-Report-Fresh"] == "true"

    table = api.wait(f"evaluations/{evaluation['id']}/report/", fresh, params={"format": "table"})
    print(table.text)
    chart = api.wait(f"evaluations/{evaluation['id']}/chart/", fresh, params={"format": args.chart.suffix[1:]})
    args.chart.write_bytes(chart.content)
    print(f"chart: {args.chart}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="e.g. https://lab.example")
    parser.add_argument("--token", required=True, help="a researcher's API token")
    parser.add_argument("--model-path", required=True, help="the base model's diffusers directory, on the server")
    parser.add_argument("--model-name", default="base")
    parser.add_argument("--prompts", type=Path, required=True, help="a prompt file (JSONL, CSV, PartiPrompts TSV)")
    parser.add_argument("--prompt-set", default="study-prompts")
    parser.add_argument("--limit", type=int, default=None, help="a sample of this many prompts")
    parser.add_argument("--images-per-prompt", type=int, default=5)
    parser.add_argument("--k", type=int, default=5, help="judgments per best/worst item")
    parser.add_argument("--pixel-weight", type=float, default=2.0)
    parser.add_argument("--config-file", default="toy_simpo_pixel.toml", help="one of training/configs/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting")
    parser.add_argument("--chart", type=Path, default=Path("report.png"), help=".png or .svg")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait in all")
    args = parser.parse_args(argv)
    try:
        study(args)
    except (Refused, TimeoutError, requests.ConnectionError) as exc:
        print(f"research_study: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
