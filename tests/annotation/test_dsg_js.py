"""The annotator page's display copy of the DSG rule gives the voting module's results.

``static/js/annotate/dsg.js`` runs under Node on the cases ``annotation.voting.dsg_apply`` is
tested on (``dsg_cases.json``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from annotation.voting import dsg_apply

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((Path(__file__).parent / "dsg_cases.json").read_text())["cases"]
RUNNER = """
import { readFileSync } from "node:fs";
import { dsgApply } from "./dsg.mjs";
const cases = JSON.parse(readFileSync(process.argv[2], "utf8")).cases;
process.stdout.write(JSON.stringify(cases.map((c) => dsgApply(c.answers, c.parents))));
"""


def test_the_pages_dsg_copy_agrees_with_the_voting_module(tmp_path):
    node = shutil.which("node") or "/usr/bin/node"
    assert Path(node).exists(), "needs Node.js (node on PATH) to run static/js/annotate/dsg.js"
    # Node reads .mjs files as ES modules whatever the package settings.
    shutil.copy(ROOT / "static/js/annotate/dsg.js", tmp_path / "dsg.mjs")
    (tmp_path / "run.mjs").write_text(RUNNER)
    out = subprocess.run(
        [node, str(tmp_path / "run.mjs"), str(Path(__file__).parent / "dsg_cases.json")],
        capture_output=True, text=True, check=True, timeout=60,
    )
    results = json.loads(out.stdout)
    assert len(results) == len(CASES)
    for case, result in zip(CASES, results):
        assert result == case["expected"] == dsg_apply(case["answers"], case["parents"]), case["name"]
