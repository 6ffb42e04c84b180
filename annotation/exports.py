"""Preference datasets: immutable, versioned exports of a round's winner/loser pairs.

A dataset is a folder::

    <out>/round-<id>-<version>/
        manifest.jsonl      one pair per line: caption, winner, loser (paths relative to the
                            manifest), margin, prompt_id, item_id, winner_sha256, loser_sha256,
                            n_votes, n_synthetic. This is what training/engine/data.py reads.
        pickapic.parquet    the same pairs as Pick-a-Pic columns: caption, jpg_0, jpg_1 (image
                            bytes, PNG), label_0, label_1 (1.0 for the preferred side)
        images/<sha256>.png each image once, named after its content
        dataset.json        round, counts (synthetic judgments included), version

``version`` is the first 16 hex digits of the manifest's sha256, and the manifest lists every
image's sha256, so the name pins the content. Rows are sorted by item id, the parquet is
written with fixed options and nothing holds a timestamp: exporting twice gives the same
bytes. The folder is written under a temporary name and renamed into place in one step, so a
failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Q

from annotation.errors import InvalidInput
from annotation.kinds import item_kind
from annotation.models import Aggregate, Round
from annotation.services.aggregation import round_aggregate

FORMAT_VERSION = 1
SUMMARY_FILE = "dataset.json"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    version: str
    pairs: int
    items_complete: int
    ties: int
    no_majority: int
    ambiguous: int
    n_judgments: int
    n_synthetic_judgments: int
    created: bool  # False when the same dataset already existed

    def as_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parquet_write(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
        ("label_0", pa.float64()), ("label_1", pa.float64()),
    ])
    table = pa.Table.from_pydict({name: [row[name] for row in rows] for name in schema.names}, schema=schema)
    pq.write_table(
        table, path, compression="zstd", compression_level=3, use_dictionary=False, write_statistics=False,
        row_group_size=256, data_page_version="1.0", version="2.6", store_schema=False,
    )


def _exported_aggregates(round_: Round):
    """The aggregates a round's export reads: its complete items, gold items left out (a round without pairs refused)."""
    if not item_kind(round_.kind).yields_pairs:
        raise InvalidInput(f"round {round_.pk} is an {round_.kind} round: only pairwise and best_worst rounds yield pairs", field="round")
    return Aggregate.objects.filter(round=round_, complete=True, item__is_gold=False)


def preferences_export_counts(*, round_: Round) -> dict:
    """What an export of the round would count now (``pairs``, ``items_complete``, ``ties``, ``no_majority``), in one
    query, without recomputing the aggregates or writing anything."""
    return _exported_aggregates(round_).aggregate(
        items_complete=Count("pk"), pairs=Count("pk", filter=Q(outcome=Aggregate.Outcome.WINNER)),
        ties=Count("pk", filter=Q(outcome=Aggregate.Outcome.TIE)), no_majority=Count("pk", filter=Q(no_majority=True)),
    )


def preferences_export(*, round_: Round, out_dir: str | Path | None = None, recompute: bool = True) -> ExportResult:
    """Write the round's winner/loser pairs (complete, non-gold items) as a dataset under ``out_dir``."""
    aggregates = _exported_aggregates(round_)
    out_dir = Path(out_dir) if out_dir is not None else Path(settings.ARTIFACTS_ROOT) / "preferences"
    summary = round_aggregate(round_=round_) if recompute else None
    aggregates = list(aggregates.select_related("item__prompt", "winner", "loser").order_by("item_id"))
    pairs = [a for a in aggregates if a.outcome == Aggregate.Outcome.WINNER]
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".round-{round_.pk}-", dir=out_dir))
    try:
        images_dir = staging / "images"
        images_dir.mkdir()
        manifest_lines, parquet_rows = [], []
        for aggregate in pairs:
            names = {}
            for side, image in (("winner", aggregate.winner), ("loser", aggregate.loser)):
                source = Path(image.file.path)
                digest = _sha256_file(source)
                if image.sha256 and digest != image.sha256:
                    raise InvalidInput(
                        f"image {image.public_id}: file {source} has sha256 {digest}, the database says {image.sha256}",
                        field="images",
                    )
                target = images_dir / f"{digest}.png"
                if not target.exists():
                    shutil.copyfile(source, target)
                names[side] = (f"images/{digest}.png", digest)
            row = {
                "caption": aggregate.item.prompt.text,
                "winner": names["winner"][0],
                "loser": names["loser"][0],
                "margin": round(aggregate.margin if aggregate.margin is not None else 1.0, 6),
                "prompt_id": aggregate.item.prompt_id,
                "item_id": aggregate.item_id,
                "winner_sha256": names["winner"][1],
                "loser_sha256": names["loser"][1],
                "n_votes": aggregate.n_used,
                "n_synthetic": aggregate.n_synthetic,
            }
            manifest_lines.append(_canonical_json(row))
            # Which side is jpg_0 follows the content hashes, so position carries no signal.
            winner_first = names["winner"][1] < names["loser"][1]
            first, second = ("winner", "loser") if winner_first else ("loser", "winner")
            parquet_rows.append({
                "caption": row["caption"],
                "jpg_0": (staging / names[first][0]).read_bytes(),
                "jpg_1": (staging / names[second][0]).read_bytes(),
                "label_0": 1.0 if winner_first else 0.0,
                "label_1": 0.0 if winner_first else 1.0,
            })
        manifest = ("\n".join(manifest_lines) + "\n" if manifest_lines else "").encode()
        (staging / "manifest.jsonl").write_bytes(manifest)
        _parquet_write(parquet_rows, staging / "pickapic.parquet")
        version = hashlib.sha256(manifest).hexdigest()[:16]
        n_judgments = sum(a.n_used for a in aggregates)
        n_synthetic = sum(a.n_synthetic for a in pairs)
        metadata = {
            "format": FORMAT_VERSION,
            "round": {"id": round_.pk, "name": round_.name, "kind": round_.kind, "criterion": round_.criterion, "k": round_.k},
            "version": version,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "pairs": len(pairs),
            "items_complete": len(aggregates),
            "ties": sum(a.outcome == Aggregate.Outcome.TIE for a in aggregates),
            "no_majority": sum(a.no_majority for a in aggregates),
            "ambiguous": sum(a.outcome == Aggregate.Outcome.AMBIGUOUS for a in aggregates),
            "judgments_counted": n_judgments,
            "synthetic_judgments_in_pairs": n_synthetic,
            "excluded_annotators": len(summary.excluded_annotators) if summary else None,
        }
        (staging / SUMMARY_FILE).write_text(_canonical_json(metadata) + "\n")
        for path in staging.rglob("*"):
            os.chmod(path, 0o444 if path.is_file() else 0o555)
        os.chmod(staging, 0o555)
        final = out_dir / f"round-{round_.pk}-{version}"
        created = True
        try:
            os.rename(staging, final)
        except OSError:
            if not final.exists():
                raise
            created = False  # the same content was exported before: the existing folder stands
            _remove(staging)
    except BaseException:
        _remove(staging)
        raise
    return ExportResult(
        path=final, version=version, pairs=len(pairs), items_complete=len(aggregates), ties=metadata["ties"],
        no_majority=metadata["no_majority"], ambiguous=metadata["ambiguous"], n_judgments=n_judgments,
        n_synthetic_judgments=n_synthetic, created=created,
    )


def _remove(path: Path) -> None:
    if not path.exists():
        return
    for sub in [path, *path.rglob("*")]:
        try:
            os.chmod(sub, 0o755 if sub.is_dir() else 0o644)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)



def export_summary_read(dataset_path: str | Path) -> dict | None:
    """What an export recorded about itself (its ``dataset.json``: round, pairs, ties, judgments,
    synthetic judgments, version), given the dataset folder or its manifest; None when the path
    is not an export (an SFT image folder) or its summary cannot be read."""
    path = Path(dataset_path)
    folder = path.parent if path.name == "manifest.jsonl" else path
    try:
        data = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
