"""Training data: SFT image folders, preference pairs, preprocessing and latent caching.

Three sources, each validated in full before step 1 (every referenced image exists,
matches its recorded sha256 when one is given, and decodes):

- SFT: an image folder with ``metadata.jsonl`` (``file_name``, ``text``), the
  imagefolder convention of ``datasets`` and diffusers' training scripts.
- Preference pairs from a JSONL manifest, one pair per line::

      {"caption": "...", "winner": "img/a.png", "loser": "img/b.png", "margin": 0.8,
       "winner_sha256": "<hex>", "loser_sha256": "<hex>", "prompt_id": 7, "item_id": 91}

  ``winner``/``loser`` are relative to the manifest's folder or absolute; ``margin``
  (default 1.0) and the two checksums are optional; other fields are carried along
  unread.
- Pick-a-Pic-style parquet (``jpg_0``, ``jpg_1`` image bytes, ``label_0``, ``caption``):
  ties (``label_0 == 0.5``) are dropped and counted, ``label_0 == 0`` swaps the pair.

A missing, corrupt or checksum-mismatched image stops loading with a ``DatasetError``
naming the file (and the manifest line or parquet row), or, with
``skip_bad_images=True``, is skipped and counted in ``dataset.report``.

Items are dicts: ``{"pixel_values", "caption"}`` for SFT and ``{"pixel_values_w",
"pixel_values_l", "caption", "margin"}`` for pairs, pixels as float32 ``[3, R, R]`` in
[-1, 1]. Each image also carries how it was preprocessed, which SDXL conditions on:
``original_size`` (height, width before resizing) and ``crop_top_left`` (top, left of the
crop in the resized, possibly flipped image), suffixed ``_w``/``_l`` for pairs.
``cache_latents`` swaps pixels for VAE latents (``latents``, ``latents_w``/``latents_l``)
computed once per dataset, and keeps the preprocessing record.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

METADATA_FILE = "metadata.jsonl"
PARQUET_COLUMNS = ("jpg_0", "jpg_1", "label_0", "caption")
CHECKSUM_FIELDS = {"winner": "winner_sha256", "loser": "loser_sha256"}
# Bump when the cached tensors' meaning changes, so that old caches are never reused.
CACHE_FORMAT = 2
# What the preprocessing records per image (SDXL's micro-conditioning reads them).
PREPROCESS_KEYS = ("original_size", "crop_top_left")


class DatasetError(ValueError):
    """A dataset cannot be used; the message names the file, and the line/row and field."""


@dataclass
class DatasetReport:
    """What loading kept and dropped; ``bad`` lists ``"<where>: <why>"`` per skipped example."""

    source: str
    total: int = 0
    kept: int = 0
    skipped_bad: int = 0
    dropped_ties: int = 0
    bad: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.source}: {self.kept} of {self.total} examples kept "
            f"({self.skipped_bad} skipped for bad images, {self.dropped_ties} ties dropped)"
        )


# --------------------------------------------------------------------------------------
# Preprocessing


class Preprocessed(NamedTuple):
    """One preprocessed image and the record of how it was made."""

    pixel_values: torch.Tensor  # float32 [3, R, R] in [-1, 1]
    original_size: torch.Tensor  # int64 [2]: height, width before resizing
    crop_top_left: torch.Tensor  # int64 [2]: top, left of the crop in the resized (and flipped) image

    def fields(self, suffix: str = "") -> dict[str, torch.Tensor]:
        return {f"pixel_values{suffix}": self.pixel_values, f"original_size{suffix}": self.original_size,
                f"crop_top_left{suffix}": self.crop_top_left}


class ImagePreprocess:
    """Resize the shorter side to ``resolution`` (bicubic), crop to a square, flip, scale to [-1, 1].

    Several images passed in one call (a winner and its loser) share the crop position and
    the flip, so that a pair differs only in content. Each result records the original size
    and the crop's top-left corner (after a flip, measured in the flipped image).
    """

    def __init__(self, resolution: int, *, center_crop: bool = True, random_flip: bool = False):
        if not isinstance(resolution, int) or resolution <= 0:
            raise DatasetError(f"resolution must be a positive integer, got {resolution!r}")
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __call__(self, images: Sequence[Image.Image]) -> list[Preprocessed]:
        # Draw from torch's RNG so that the loop's seeding (and DataLoader worker seeding) governs it.
        if self.center_crop:
            fx = fy = 0.5
        else:
            fx, fy = torch.rand(2).tolist()
        flip = self.random_flip and bool(torch.rand(()) < 0.5)
        return [self._one(image, fx, fy, flip) for image in images]

    def _one(self, image: Image.Image, fx: float, fy: float, flip: bool) -> Preprocessed:
        res = self.resolution
        image = ImageOps.exif_transpose(image).convert("RGB")
        width, height = image.size
        original_size = torch.tensor([height, width])
        scale = res / min(width, height)
        new_size = (max(res, round(width * scale)), max(res, round(height * scale)))
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BICUBIC)
        left = round(fx * (new_size[0] - res))
        top = round(fy * (new_size[1] - res))
        image = image.crop((left, top, left + res, top + res))
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            left = new_size[0] - res - left
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        pixels = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        return Preprocessed(pixels, original_size, torch.tensor([top, left]))


# --------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class _ImageRef:
    """One image to check: a file path or in-memory bytes, and a label saying where it is named."""

    label: str  # "<image path> (<manifest>:<line>, field 'winner')" or "<parquet> row N, field 'jpg_0'"
    path: Path | None = None
    data: bytes | None = None
    sha256: str | None = None


def _check_image(ref: _ImageRef) -> tuple[str | None, str | None]:
    """Return ``(sha256 hex, None)`` for a good image, ``(None, reason)`` for a bad one."""
    if ref.data is not None:
        data = ref.data
    else:
        try:
            data = ref.path.read_bytes()
        except FileNotFoundError:
            return None, "file not found"
        except OSError as exc:
            return None, f"cannot read file ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    if ref.sha256 is not None and digest != ref.sha256.lower():
        return None, f"sha256 mismatch (expected {ref.sha256}, file has {digest})"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        # verify() leaves the image unusable and skips pixel data; a full decode catches truncation.
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as exc:  # PIL raises many types for corrupt data; all mean "not an image"
        return None, f"not a decodable image ({type(exc).__name__}: {exc})"
    return digest, None


def _check_images(refs: list[_ImageRef]) -> list[tuple[str | None, str | None]]:
    # Decoding and hashing release the GIL, so threads speed up large datasets.
    workers = min(8, os.cpu_count() or 1)
    if workers <= 1 or len(refs) < 16:
        return [_check_image(ref) for ref in refs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_check_image, refs, chunksize=32))


def _screen(
    examples: list[dict],
    refs_of: Callable[[dict], list[_ImageRef]],
    report: DatasetReport,
    skip_bad_images: bool,
) -> list[dict]:
    """Check every image of every example; return the good examples with their digests.

    Each returned example gains ``"digests"``: the sha256 of its images, in order.
    """
    refs = [refs_of(example) for example in examples]
    flat = [ref for group in refs for ref in group]
    results = iter(_check_images(flat))
    kept = []
    for example, group in zip(examples, refs):
        digests, problems = [], []
        for ref in group:
            digest, reason = next(results)
            digests.append(digest)
            if reason is not None:
                problems.append(f"{ref.label}: {reason}")
        if problems:
            if not skip_bad_images:
                raise DatasetError(
                    f"bad image {problems[0]}; fix the dataset or set skip_bad_images to skip such examples"
                )
            report.skipped_bad += 1
            report.bad.extend(problems)
            continue
        kept.append({**example, "digests": digests})
    report.kept = len(kept)
    if not kept:
        raise DatasetError(f"{report.source}: no usable examples left ({report.summary()})")
    return kept


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Return ``(line number, object)`` for each non-blank line; errors name the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    rows = []
    # Split on "\n" only: str.splitlines() would also split inside strings holding U+2028.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    return rows


def _field(row: dict, name: str, where: str, kind: type | tuple[type, ...] = str):
    if name not in row:
        raise DatasetError(f"{where}: missing field '{name}'")
    value = row[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(f"{where}: field '{name}' must be {expected}, got {value!r}")
    return value


def _load_image(source: Path | bytes, label: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except Exception as exc:  # validated at load time; a change since then is still the data's fault
        raise DatasetError(f"bad image {label}: {type(exc).__name__}: {exc}") from exc
    return image


def _fingerprint(kind: str, resolution: int, examples: list[dict]) -> str:
    h = hashlib.sha256(f"{kind}\n{resolution}\n".encode())
    for example in examples:
        h.update(("\n".join(example["digests"]) + "\n").encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Datasets


class SFTDataset(Dataset):
    """Image-caption examples; items ``{"pixel_values": [3, R, R] in [-1, 1], "caption": str}``."""

    kind = "sft"

    def __init__(self, examples: list[dict], preprocess: ImagePreprocess, report: DatasetReport):
        self.examples = examples
        self.preprocess = preprocess
        self.report = report
        self.fingerprint = _fingerprint(self.kind, preprocess.resolution, examples)

    def __len__(self) -> int:
        return len(self.examples)

    def fields(self, index: int) -> dict:
        """The item's non-image fields."""
        return {"caption": self.examples[index]["caption"]}

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        image = _load_image(example["path"], f"{example['path']} ({example['where']})")
        (preprocessed,) = self.preprocess([image])
        return {**preprocessed.fields(), **self.fields(index)}


class PreferenceDataset(Dataset):
    """Winner/loser pairs; items ``{"pixel_values_w", "pixel_values_l", "caption", "margin"}``."""

    kind = "preference"

    def __init__(
        self,
        examples: list[dict],
        preprocess: ImagePreprocess,
        report: DatasetReport,
        parquet_images: _ParquetImages | None = None,
    ):
        self.examples = examples
        self.preprocess = preprocess
        self.report = report
        self.fingerprint = _fingerprint(self.kind, preprocess.resolution, examples)
        self.parquet_images = parquet_images

    def __len__(self) -> int:
        return len(self.examples)

    def fields(self, index: int) -> dict:
        example = self.examples[index]
        return {"caption": example["caption"], "margin": example["margin"]}

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        images = []
        for side in ("winner", "loser"):
            if self.parquet_images is not None:
                source = self.parquet_images.get(example, side)
                label = f"{example['where']}, field '{example[side + '_column']}'"
            else:
                source = example[side]
                label = f"{source} ({example['where']}, field '{side}')"
            images.append(_load_image(source, label))
        winner, loser = self.preprocess(images)
        return {**winner.fields("_w"), **loser.fields("_l"), **self.fields(index)}


def collate_fn(batch: list[dict]) -> dict:
    """Stack tensors, turn numbers into a float tensor, keep strings (captions) as a list."""
    out = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = values
    return out


# --------------------------------------------------------------------------------------
# Loaders


def load_sft_dataset(
    path: str | Path,
    *,
    resolution: int,
    center_crop: bool = True,
    random_flip: bool = False,
    skip_bad_images: bool = False,
) -> SFTDataset:
    """Load and validate an image folder with ``metadata.jsonl`` (``file_name``, ``text``).

    ``path`` is the folder or its ``metadata.jsonl``; ``file_name`` is relative to the folder.
    """
    preprocess = ImagePreprocess(resolution, center_crop=center_crop, random_flip=random_flip)
    path = Path(path).expanduser()
    metadata = path if path.is_file() else path / METADATA_FILE
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if not metadata.is_file():
        raise DatasetError(f"{path}: not an image folder dataset (no {METADATA_FILE})")
    root = metadata.parent
    report = DatasetReport(source=str(metadata))
    examples = []
    for lineno, row in _read_jsonl(metadata):
        where = f"{metadata}:{lineno}"
        file_name = _field(row, "file_name", where)
        caption = _field(row, "text", where)
        examples.append({"path": root / file_name, "caption": caption, "where": where})
    report.total = len(examples)

    def refs_of(example: dict) -> list[_ImageRef]:
        return [_ImageRef(label=f"{example['path']} ({example['where']})", path=example["path"])]

    kept = _screen(examples, refs_of, report, skip_bad_images)
    return SFTDataset(kept, preprocess, report)


def load_preference_dataset(
    path: str | Path,
    *,
    resolution: int,
    center_crop: bool = True,
    random_flip: bool = False,
    skip_bad_images: bool = False,
) -> PreferenceDataset:
    """Load and validate preference pairs from a JSONL manifest or a Pick-a-Pic-style parquet file."""
    preprocess = ImagePreprocess(resolution, center_crop=center_crop, random_flip=random_flip)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected a .jsonl manifest or a .parquet file)")
    if path.suffix == ".parquet":
        return _load_parquet_pairs(path, preprocess, skip_bad_images)
    return _load_manifest_pairs(path, preprocess, skip_bad_images)


def _load_manifest_pairs(path: Path, preprocess: ImagePreprocess, skip_bad_images: bool) -> PreferenceDataset:
    root = path.parent
    report = DatasetReport(source=str(path))
    known_checksums = set(CHECKSUM_FIELDS.values())
    examples = []
    for lineno, row in _read_jsonl(path):
        where = f"{path}:{lineno}"
        # A checksum under another name would silently go unchecked; refuse it instead.
        for key in row:
            if "sha256" in key and key not in known_checksums:
                raise DatasetError(
                    f"{where}: unknown checksum field '{key}' (expected {', '.join(sorted(known_checksums))})"
                )
        example = {"caption": _field(row, "caption", where), "where": where}
        for side, checksum in CHECKSUM_FIELDS.items():
            example[side] = root / _field(row, side, where)  # an absolute path replaces root
            example[checksum] = _field(row, checksum, where) if checksum in row else None
        margin = float(_field(row, "margin", where, (int, float))) if "margin" in row else 1.0
        if not np.isfinite(margin):
            raise DatasetError(f"{where}: field 'margin' must be a finite number, got {margin!r}")
        example["margin"] = margin
        examples.append(example)
    report.total = len(examples)

    def refs_of(example: dict) -> list[_ImageRef]:
        return [
            _ImageRef(label=f"{example[side]} ({example['where']}, field '{side}')", path=example[side],
                      sha256=example[checksum])
            for side, checksum in CHECKSUM_FIELDS.items()
        ]

    kept = _screen(examples, refs_of, report, skip_bad_images)
    return PreferenceDataset(kept, preprocess, report)


def _image_cell(value, where: str, column: str) -> bytes:
    # Plain binary columns, or the {"bytes", "path"} struct that `datasets` writes for Image features.
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)):
        raise DatasetError(f"{where}: field '{column}' must hold image bytes, got {type(value).__name__}")
    return bytes(value)


class _ParquetImages:
    """Reads one image cell at a time from a memory-mapped parquet file (picklable for DataLoader workers)."""

    def __init__(self, path: Path, table=None):
        self.path = path
        self._table = table

    def __getstate__(self) -> dict:
        return {"path": self.path, "_table": None}

    def get(self, example: dict, side: str) -> bytes:
        if self._table is None:
            self._table = pq.read_table(self.path, columns=["jpg_0", "jpg_1"], memory_map=True)
        column = example[f"{side}_column"]
        return _image_cell(self._table.column(column)[example["row"]].as_py(), example["where"], column)


def _load_parquet_pairs(path: Path, preprocess: ImagePreprocess, skip_bad_images: bool) -> PreferenceDataset:
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises ArrowInvalid or OSError variants for non-parquet files
        raise DatasetError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in PARQUET_COLUMNS if c not in names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
    table = pq.read_table(path, columns=list(PARQUET_COLUMNS), memory_map=True)
    images = _ParquetImages(path, table)
    report = DatasetReport(source=str(path))
    labels = table.column("label_0").to_pylist()
    captions = table.column("caption").to_pylist()
    report.total = len(labels)
    examples = []
    for row, (label, caption) in enumerate(zip(labels, captions)):
        where = f"{path} row {row}"
        if not isinstance(caption, str):
            raise DatasetError(f"{where}: field 'caption' must be str, got {caption!r}")
        if isinstance(label, bool) or label not in (0, 0.5, 1):
            raise DatasetError(f"{where}: field 'label_0' must be 0, 0.5 or 1, got {label!r}")
        if label == 0.5:
            report.dropped_ties += 1
            continue
        winner, loser = ("jpg_0", "jpg_1") if label == 1 else ("jpg_1", "jpg_0")
        examples.append({"caption": caption, "margin": 1.0, "where": where, "row": row,
                         "winner_column": winner, "loser_column": loser})

    def refs_of(example: dict) -> list[_ImageRef]:
        return [
            _ImageRef(label=f"{example['where']}, field '{example[side + '_column']}'",
                      data=images.get(example, side))
            for side in ("winner", "loser")
        ]

    kept = _screen(examples, refs_of, report, skip_bad_images)
    return PreferenceDataset(kept, preprocess, report, parquet_images=images)


# --------------------------------------------------------------------------------------
# Latent cache


class CachedLatentDataset(Dataset):
    """A dataset's items with VAE latents in place of pixels (and the preprocessing record), read
    lazily from a safetensors file."""

    def __init__(self, source: SFTDataset | PreferenceDataset, cache_file: Path, keys: tuple[str, ...]):
        self.source = source
        self.cache_file = cache_file
        self.keys = keys
        self.report = source.report
        self.fingerprint = source.fingerprint
        self._handle = None  # opened lazily, so that each DataLoader worker opens its own

    def __len__(self) -> int:
        return len(self.source)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def __getitem__(self, index: int) -> dict:
        if self._handle is None:
            self._handle = safe_open(str(self.cache_file), framework="pt")
        item = {key: self._handle.get_slice(key)[index].squeeze(0) for key in self.keys}
        return {**item, **self.source.fields(index)}


def cache_latents(
    dataset: SFTDataset | PreferenceDataset,
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    cache_dir: str | Path,
    batch_size: int,
    *,
    encoder_id: str,
) -> CachedLatentDataset:
    """Encode every image once and return a dataset that yields latents instead of pixels.

    ``encode_fn`` maps a CPU pixel batch ``[B, 3, R, R]`` in [-1, 1] to latents ``[B, C, h, w]``
    exactly as the loop wants them (for example the VAE posterior's mean times the scaling
    factor); the cache stores its output as-is. ``encoder_id`` identifies the VAE, its
    weights and dtype, and what ``encode_fn`` does (``vae_fingerprint`` helps build it).

    The cache file is named by a hash of the images' bytes, the resolution and
    ``encoder_id``, so a changed file, resolution or VAE never reuses a stale cache. Writes
    are atomic, so concurrent processes computing the same cache are harmless.

    Random flips and random crops would be frozen by caching, so they are refused: load the
    dataset with ``center_crop=True, random_flip=False`` to cache it.
    """
    if dataset.preprocess.random_flip:
        raise DatasetError("latent caching cannot be combined with random_flip; turn one of them off")
    if not dataset.preprocess.center_crop:
        raise DatasetError("latent caching needs center_crop=True (a random crop would be frozen in the cache)")
    if batch_size <= 0:
        raise DatasetError(f"batch_size must be positive, got {batch_size!r}")
    sides = ("",) if dataset.kind == "sft" else ("_w", "_l")
    keys = tuple(f"latents{side}" for side in sides) + tuple(
        f"{name}{side}" for name in PREPROCESS_KEYS for side in sides)
    key = hashlib.sha256(
        json.dumps(
            {"format": CACHE_FORMAT, "dataset": dataset.fingerprint, "encoder": encoder_id}, sort_keys=True
        ).encode()
    ).hexdigest()[:32]
    cache_dir = Path(cache_dir).expanduser()
    cache_file = cache_dir / f"latents-{dataset.kind}-{key}.safetensors"
    if not _cache_usable(cache_file, keys, len(dataset)):
        _write_cache(dataset, encode_fn, cache_file, batch_size, keys, key, encoder_id)
    return CachedLatentDataset(dataset, cache_file, keys)


def _cache_usable(cache_file: Path, keys: tuple[str, ...], length: int) -> bool:
    if not cache_file.is_file():
        return False
    try:
        with safe_open(str(cache_file), framework="pt") as handle:
            return all(key in handle.keys() and handle.get_slice(key).get_shape()[0] == length for key in keys)
    except Exception:  # an unreadable cache is recomputed, never trusted
        return False


def _write_cache(dataset, encode_fn, cache_file: Path, batch_size: int, keys, key: str, encoder_id: str) -> None:
    latent_keys = [k for k in keys if k.startswith("latents")]
    pixel_keys = [k.replace("latents", "pixel_values", 1) for k in latent_keys]
    record_keys = [k for k in keys if k not in latent_keys]
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            # One encoder call per batch: winners and losers together.
            pixels = torch.cat([torch.stack([item[p] for item in items]) for p in pixel_keys])
            latents = encode_fn(pixels).detach().to("cpu", copy=True)
            for k, part in zip(latent_keys, latents.chunk(len(latent_keys))):
                chunks[k].append(part)
            for k in record_keys:
                chunks[k].append(torch.stack([item[k] for item in items]))
    tensors = {k: torch.cat(v).contiguous() for k, v in chunks.items()}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".latents-", suffix=".tmp", dir=cache_file.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={
            "format": str(CACHE_FORMAT), "key": key, "encoder_id": encoder_id,
            "dataset": dataset.report.source, "resolution": str(dataset.preprocess.resolution),
        })
        os.replace(tmp, cache_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """A short hash of a VAE's class, config, weights and dtype, for ``encoder_id``."""
    h = hashlib.sha256(type(vae).__name__.encode())
    config = getattr(vae, "config", None)
    if config is not None:
        h.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]
