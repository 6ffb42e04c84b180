"""Parse an image manifest into records and check every image file, before anything is written.

A manifest is JSONL or CSV (told apart by the file name), one image a line:

- ``model``: the model's name;
- ``prompt_id`` (the prompt's external id) or ``prompt`` (its exact text), within the set
  ``prompt_set`` (or the command's ``--prompts``);
- ``seed``: the sampler's seed, when known (default 0; give seeds when a (model, prompt) has
  several images);
- ``path``: the PNG file, relative to the manifest's folder or absolute;
- ``sha256`` (optional): checked against the file;
- ``sampler`` (optional): a JSON object of sampler settings (in CSV, JSON text).

Every error names the file, the line and the field: ``PATH:LINE: field 'F': message``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from catalog.images import ImageRejected, image_decode_check
from catalog.prompt_import import ImportFileError, table_rows

MANIFEST_FIELDS = ("model", "prompt_set", "prompt_id", "prompt", "seed", "path", "sha256", "sampler")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Image.seed is a signed 64-bit column.
_SEED_RANGE = range(-(2**63), 2**63)


class ImageImportError(ImportFileError):
    pass


@dataclass(frozen=True)
class ImageRecord:
    line: int
    model: str
    prompt_set: str
    prompt_id: str
    prompt_text: str
    seed: int
    path: Path
    sha256: str
    sampler: dict = field(default_factory=dict)

    @property
    def prompt_key(self) -> tuple[str, str, str]:
        return (self.prompt_set, self.prompt_id, self.prompt_text)


def parse_image_manifest(
    path: str | Path, *, default_prompt_set: str = "", confined: bool = False
) -> list[ImageRecord]:
    """Every line of the manifest, its file hashed and fully decoded; raises ImageImportError at the first bad one.

    ``confined``: every image must lie inside the manifest's folder (an uploaded archive may not
    name the server's other files).
    """
    path = Path(path)
    records: list[ImageRecord] = []
    seen: dict[tuple, int] = {}
    for line, row in table_rows(path, ("model", "path")):
        record = _record(path, line, row, default_prompt_set, confined)
        key = (record.model, record.prompt_key, record.seed)
        if key in seen:
            raise ImageImportError(
                path, line, "seed", f"same (model, prompt, seed) as line {seen[key]}; give each image its own seed"
            )
        seen[key] = line
        records.append(record)
    if not records:
        raise ImageImportError(path, None, None, "the manifest lists no images")
    return records


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _text(path: Path, line: int, row: dict, name: str, *, required: bool = False) -> str:
    value = row.get(name)
    if value is None or value == "":
        if required:
            raise ImageImportError(path, line, name, "missing or empty")
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and name in ("prompt_id", "seed"):
        return str(value)
    if not isinstance(value, str):
        raise ImageImportError(path, line, name, "expected a string")
    if "\x00" in value:
        raise ImageImportError(path, line, name, "contains a NUL character")
    value = value.strip()
    if required and not value:
        raise ImageImportError(path, line, name, "missing or empty")
    return value


def _record(path: Path, line: int, row: dict, default_prompt_set: str, confined: bool) -> ImageRecord:
    unknown = sorted(k for k in row if k not in MANIFEST_FIELDS)
    if unknown:
        raise ImageImportError(path, line, unknown[0], f"unknown field (known: {', '.join(MANIFEST_FIELDS)})")
    model = _text(path, line, row, "model", required=True)
    prompt_set = _text(path, line, row, "prompt_set") or default_prompt_set
    if not prompt_set:
        raise ImageImportError(path, line, "prompt_set", "missing: give it on the line or pass --prompts")
    prompt_id, prompt_text = _text(path, line, row, "prompt_id"), _text(path, line, row, "prompt")
    if bool(prompt_id) == bool(prompt_text):
        raise ImageImportError(path, line, "prompt_id", "give either prompt_id or prompt (the text), not both or neither")
    seed, sampler = _seed(path, line, row.get("seed")), _sampler(path, line, row.get("sampler"))
    image_path = _image_path(path, line, row, confined)
    sha256 = _checked_file(path, line, image_path, _text(path, line, row, "sha256").lower())
    return ImageRecord(
        line=line, model=model, prompt_set=prompt_set, prompt_id=prompt_id, prompt_text=prompt_text,
        seed=seed, path=image_path, sha256=sha256, sampler=sampler,
    )


def _seed(path: Path, line: int, value) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ImageImportError(path, line, "seed", "expected an integer")
    try:
        seed = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise ImageImportError(path, line, "seed", f"expected an integer, got {value!r}") from None
    if seed not in _SEED_RANGE:
        raise ImageImportError(path, line, "seed", "out of range (a signed 64-bit integer)")
    return seed


def _image_path(path: Path, line: int, row: dict, confined: bool) -> Path:
    image_path = Path(_text(path, line, row, "path", required=True))
    if confined:
        folder = path.parent.resolve()
        try:
            inside = (folder / image_path).resolve().is_relative_to(folder)
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise ImageImportError(path, line, "path", f"{str(image_path)[:80]}: not a path inside the manifest's folder")
        return folder / image_path
    return image_path if image_path.is_absolute() else path.parent / image_path


def _checked_file(path: Path, line: int, image_path: Path, expected_sha256: str) -> str:
    """The file's sha256, after checking that it is a whole PNG within the pixel limit."""
    if expected_sha256 and not _SHA256.fullmatch(expected_sha256):
        raise ImageImportError(path, line, "sha256", "expected 64 hexadecimal digits")
    if not image_path.is_file():
        raise ImageImportError(path, line, "path", f"no such file: {image_path}")
    try:
        sha256 = file_sha256(image_path)
        with image_path.open("rb") as handle:
            image_format = image_decode_check(handle)
    except OSError as exc:
        raise ImageImportError(path, line, "path", f"cannot read {image_path}: {exc.strerror}") from None
    except ImageRejected as exc:
        raise ImageImportError(path, line, "path", f"{image_path}: {exc}") from None
    # Stored images are PNGs, named and served as such (catalog.models.image_upload_to).
    if image_format != "PNG":
        raise ImageImportError(path, line, "path", f"{image_path}: a {image_format} file; convert it to PNG")
    if expected_sha256 and expected_sha256 != sha256:
        raise ImageImportError(path, line, "sha256", f"the file's sha256 is {sha256}, not {expected_sha256}")
    return sha256


def _sampler(path: Path, line: int, value) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ImageImportError(path, line, "sampler", "not a JSON object") from None
    if not isinstance(value, dict):
        raise ImageImportError(path, line, "sampler", "expected a JSON object")
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ImageImportError(path, line, "sampler", "NaN or infinity is not JSON") from None
    return value
