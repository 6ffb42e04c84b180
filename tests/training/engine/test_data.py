"""Datasets: loading, validation errors, preprocessing, pairing and the latent cache."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from training.engine.data import (
    DatasetError,
    cache_latents,
    collate_fn,
    load_preference_dataset,
    load_sft_dataset,
)

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def solid(color, size=(20, 12)) -> Image.Image:
    return Image.new("RGB", size, color)


def half_and_half(size=(16, 16)) -> Image.Image:
    """White left half, black right half: a horizontal flip is visible."""
    image = Image.new("RGB", size, (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1]))
    return image


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def image_bytes(image: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_jsonl(path: Path, rows) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sft_folder(tmp_path):
    save(solid(RED), tmp_path / "a.png")
    save(solid(BLUE, size=(12, 30)), tmp_path / "sub" / "b.jpg")
    write_jsonl(tmp_path / "metadata.jsonl", [
        {"file_name": "a.png", "text": "a red square"},
        {"file_name": "sub/b.jpg", "text": "a blue square"},
    ])
    return tmp_path


@pytest.fixture
def manifest(tmp_path):
    """Two pairs: red beats blue (relative paths, margin 0.8), green beats red (absolute paths)."""
    images = tmp_path / "images"
    red, blue = save(solid(RED), images / "red.png"), save(solid(BLUE), images / "blue.jpg")
    green = save(solid(GREEN, size=(30, 20)), images / "green.png")
    return write_jsonl(tmp_path / "pairs.jsonl", [
        {"caption": "red", "winner": "images/red.png", "loser": "images/blue.jpg", "margin": 0.8,
         "winner_sha256": sha256(red), "loser_sha256": sha256(blue), "prompt_id": 1, "item_id": 10},
        {"caption": "green", "winner": str(green), "loser": str(red)},
    ])


def write_parquet(path: Path, rows) -> Path:
    table = pa.table({
        "jpg_0": pa.array([r[0] for r in rows], type=pa.binary()),
        "jpg_1": pa.array([r[1] for r in rows], type=pa.binary()),
        "label_0": pa.array([r[2] for r in rows], type=pa.float64()),
        "caption": pa.array([r[3] for r in rows], type=pa.string()),
    })
    pq.write_table(table, path)
    return path


# --- SFT ---------------------------------------------------------------------------------


def test_sft_items_are_normalized_square_tensors_with_captions(sft_folder):
    dataset = load_sft_dataset(sft_folder, resolution=8)

    assert len(dataset) == 2
    red = dataset[0]
    assert red["caption"] == "a red square"
    assert red["pixel_values"].shape == (3, 8, 8)
    assert red["pixel_values"].dtype == torch.float32
    # Solid red maps to +1 in the red channel and -1 elsewhere.
    assert torch.allclose(red["pixel_values"][0], torch.ones(8, 8), atol=1e-2)
    assert torch.allclose(red["pixel_values"][1:], -torch.ones(2, 8, 8), atol=1e-2)
    blue = dataset[1]["pixel_values"]  # a tall JPEG, resized and cropped
    assert blue.shape == (3, 8, 8)
    assert blue.min() >= -1.0 and blue.max() <= 1.0
    assert blue[2].mean() > 0.9 and blue[0].mean() < -0.9
    assert dataset.report.total == dataset.report.kept == 2


def test_sft_accepts_the_metadata_file_itself(sft_folder):
    assert len(load_sft_dataset(sft_folder / "metadata.jsonl", resolution=8)) == 2


def test_center_crop_keeps_the_middle_of_a_wide_image(tmp_path):
    image = Image.new("RGB", (30, 10), RED)
    image.paste(GREEN, (10, 0, 20, 10))  # green middle third
    save(image, tmp_path / "wide.png")
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "wide.png", "text": "x"}])

    pixels = load_sft_dataset(tmp_path, resolution=10)[0]["pixel_values"]

    assert torch.allclose(pixels[1, :, 2:8], torch.ones(10, 6), atol=1e-2)  # green channel at +1
    assert pixels[0, :, 2:8].max() < -0.9


def test_preprocessing_records_the_original_size_and_the_crop_corner(tmp_path):
    # SDXL conditions on these (add_time_ids); a crop or a flip must change them.
    save(half_and_half(size=(60, 40)), tmp_path / "wide.png")
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "wide.png", "text": "x"}])

    centred = load_sft_dataset(tmp_path, resolution=20)[0]  # resized to 30 × 20, then cropped to 20 × 20
    assert centred["original_size"].tolist() == [40, 60]  # height, width
    assert centred["crop_top_left"].tolist() == [0, 5]

    torch.manual_seed(0)
    corners = {tuple(load_sft_dataset(tmp_path, resolution=20, center_crop=False)[0]["crop_top_left"].tolist())
               for _ in range(8)}
    assert len(corners) > 1 and all(top == 0 and 0 <= left <= 10 for top, left in corners)

    flipped = load_sft_dataset(tmp_path, resolution=20, random_flip=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        item = flipped[0]
        white_on_left = bool(item["pixel_values"][:, :, 0].mean() > 0)
        seen.add((white_on_left, tuple(item["crop_top_left"].tolist())))
    assert seen == {(True, (0, 5)), (False, (0, 5))}  # the centred crop of 30 px stays at 5 when flipped

    torch.manual_seed(3)
    both = load_sft_dataset(tmp_path, resolution=20, center_crop=False, random_flip=True)
    lefts = {tuple(both[0]["crop_top_left"].tolist()) for _ in range(20)}
    assert len(lefts) > 1


def test_pairs_keep_each_image_s_own_original_size(tmp_path):
    save(solid(RED, size=(20, 12)), tmp_path / "w.png")
    save(solid(BLUE, size=(16, 16)), tmp_path / "l.png")
    manifest = write_jsonl(tmp_path / "pairs.jsonl", [{"caption": "c", "winner": "w.png", "loser": "l.png"}])
    item = load_preference_dataset(manifest, resolution=8)[0]
    # 20 × 12 → 13 × 8: the centred 8-px crop starts at round(2.5) = 2
    assert item["original_size_w"].tolist() == [12, 20] and item["original_size_l"].tolist() == [16, 16]
    assert item["crop_top_left_w"].tolist() == [0, 2] and item["crop_top_left_l"].tolist() == [0, 0]


def test_missing_image_error_names_path_and_line(sft_folder):
    write_jsonl(sft_folder / "metadata.jsonl", [
        {"file_name": "a.png", "text": "ok"},
        {"file_name": "gone.png", "text": "missing"},
    ])

    with pytest.raises(DatasetError) as excinfo:
        load_sft_dataset(sft_folder, resolution=8)

    message = str(excinfo.value)
    assert str(sft_folder / "gone.png") in message
    assert "metadata.jsonl:2" in message
    assert "not found" in message


def test_corrupt_and_truncated_images_are_errors_or_skipped_and_counted(sft_folder):
    (sft_folder / "corrupt.png").write_bytes(b"this is not a png")
    good = (sft_folder / "a.png").read_bytes()
    (sft_folder / "truncated.png").write_bytes(good[: len(good) // 2])
    write_jsonl(sft_folder / "metadata.jsonl", [
        {"file_name": "a.png", "text": "ok"},
        {"file_name": "corrupt.png", "text": "bad"},
        {"file_name": "truncated.png", "text": "bad"},
        {"file_name": "gone.png", "text": "missing"},
    ])

    with pytest.raises(DatasetError, match="corrupt.png"):
        load_sft_dataset(sft_folder, resolution=8)

    dataset = load_sft_dataset(sft_folder, resolution=8, skip_bad_images=True)
    assert len(dataset) == 1
    assert dataset[0]["caption"] == "ok"
    report = dataset.report
    assert (report.total, report.kept, report.skipped_bad) == (4, 1, 3)
    assert any("truncated.png" in line for line in report.bad)
    assert any("gone.png" in line for line in report.bad)


def test_empty_dataset_after_skipping_is_an_error(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"junk")
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "corrupt.png", "text": "bad"}])

    with pytest.raises(DatasetError, match="no usable examples"):
        load_sft_dataset(tmp_path, resolution=8, skip_bad_images=True)


def test_malformed_jsonl_names_file_and_line(sft_folder):
    write_jsonl(sft_folder / "metadata.jsonl", [
        {"file_name": "a.png", "text": "ok"},
        '{"file_name": "sub/b.jpg", "text": ',
    ])

    with pytest.raises(DatasetError, match=r"metadata\.jsonl:2: malformed JSON"):
        load_sft_dataset(sft_folder, resolution=8)


def test_missing_field_is_named(sft_folder, manifest):
    write_jsonl(sft_folder / "metadata.jsonl", [{"file_name": "a.png"}])
    with pytest.raises(DatasetError, match=r"metadata\.jsonl:1: missing field 'text'"):
        load_sft_dataset(sft_folder, resolution=8)

    write_jsonl(manifest, [{"caption": "c", "winner": "images/red.png"}])
    with pytest.raises(DatasetError, match=r"pairs\.jsonl:1: missing field 'loser'"):
        load_preference_dataset(manifest, resolution=8)


def test_wrongly_typed_field_is_named(manifest):
    write_jsonl(manifest, [{"caption": "c", "winner": "images/red.png", "loser": "images/blue.jpg",
                            "margin": "high"}])
    with pytest.raises(DatasetError, match="field 'margin' must be"):
        load_preference_dataset(manifest, resolution=8)


def test_folder_without_metadata_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no metadata.jsonl"):
        load_sft_dataset(tmp_path, resolution=8)


# --- Preference pairs ------------------------------------------------------------------


def test_manifest_pairs_resolve_relative_and_absolute_paths(manifest):
    dataset = load_preference_dataset(manifest, resolution=8)

    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    assert first["caption"] == "red"
    assert first["margin"] == pytest.approx(0.8)
    assert second["margin"] == 1.0  # default
    assert first["pixel_values_w"][0].mean() > 0.9  # red winner
    assert first["pixel_values_l"][2].mean() > 0.9  # blue loser
    assert second["pixel_values_w"][1].mean() > 0.9  # green winner, absolute path
    assert second["pixel_values_w"].shape == second["pixel_values_l"].shape == (3, 8, 8)


def test_manifest_sha256_mismatch_names_the_file(manifest):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    save(solid(GREEN), manifest.parent / "images" / "red.png")  # replaced after export

    with pytest.raises(DatasetError) as excinfo:
        load_preference_dataset(manifest, resolution=8)
    message = str(excinfo.value)
    assert "red.png" in message and "sha256 mismatch" in message and "pairs.jsonl:1" in message
    assert rows[0]["winner_sha256"] in message

    dataset = load_preference_dataset(manifest, resolution=8, skip_bad_images=True)
    assert len(dataset) == 1 and dataset.report.skipped_bad == 1


def test_manifest_refuses_unknown_checksum_field(manifest):
    write_jsonl(manifest, [{"caption": "c", "winner": "images/red.png", "loser": "images/blue.jpg",
                            "sha256_winner": "00"}])
    with pytest.raises(DatasetError, match="unknown checksum field 'sha256_winner'"):
        load_preference_dataset(manifest, resolution=8)


def test_manifest_missing_loser_image_names_path_and_field(manifest):
    write_jsonl(manifest, [{"caption": "c", "winner": "images/red.png", "loser": "images/nope.png"}])
    with pytest.raises(DatasetError) as excinfo:
        load_preference_dataset(manifest, resolution=8)
    message = str(excinfo.value)
    assert str(manifest.parent / "images" / "nope.png") in message
    assert "pairs.jsonl:1" in message and "'loser'" in message


def test_parquet_drops_ties_and_swaps_when_image_1_wins(tmp_path):
    red, blue, green = (image_bytes(solid(c), fmt) for c, fmt in ((RED, "PNG"), (BLUE, "JPEG"), (GREEN, "PNG")))
    path = write_parquet(tmp_path / "pairs.parquet", [
        (red, blue, 1.0, "image 0 wins"),
        (red, green, 0.5, "tie"),
        (red, blue, 0.0, "image 1 wins"),
    ])

    dataset = load_preference_dataset(path, resolution=8)

    assert len(dataset) == 2
    assert (dataset.report.total, dataset.report.kept, dataset.report.dropped_ties) == (3, 2, 1)
    kept, swapped = dataset[0], dataset[1]
    assert kept["caption"] == "image 0 wins"
    assert kept["pixel_values_w"][0].mean() > 0.9 and kept["pixel_values_l"][2].mean() > 0.9
    assert swapped["caption"] == "image 1 wins"
    assert swapped["pixel_values_w"][2].mean() > 0.9 and swapped["pixel_values_l"][0].mean() > 0.9


def test_parquet_corrupt_cell_names_row_and_column(tmp_path):
    red = image_bytes(solid(RED))
    path = write_parquet(tmp_path / "pairs.parquet", [(red, red, 1.0, "ok"), (red, b"junk", 0.0, "bad")])

    with pytest.raises(DatasetError, match=r"pairs\.parquet row 1, field 'jpg_1'"):
        load_preference_dataset(path, resolution=8)
    dataset = load_preference_dataset(path, resolution=8, skip_bad_images=True)
    assert len(dataset) == 1 and dataset.report.skipped_bad == 1


def test_parquet_missing_column_and_bad_label_are_named(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"jpg_0": [b""], "jpg_1": [b""], "caption": ["c"]}), path)
    with pytest.raises(DatasetError, match="missing column.*'label_0'"):
        load_preference_dataset(path, resolution=8)

    red = image_bytes(solid(RED))
    write_parquet(path, [(red, red, 0.7, "c")])
    with pytest.raises(DatasetError, match="row 0: field 'label_0' must be 0, 0.5 or 1"):
        load_preference_dataset(path, resolution=8)


def test_random_flip_and_crop_are_shared_by_winner_and_loser(tmp_path):
    save(half_and_half(size=(24, 16)), tmp_path / "w.png")
    save(half_and_half(size=(24, 16)), tmp_path / "l.png")
    manifest = write_jsonl(tmp_path / "pairs.jsonl", [{"caption": "c", "winner": "w.png", "loser": "l.png"}])
    dataset = load_preference_dataset(manifest, resolution=8, center_crop=False, random_flip=True)
    torch.manual_seed(0)

    left_white = []
    for _ in range(20):
        item = dataset[0]
        assert torch.equal(item["pixel_values_w"], item["pixel_values_l"])
        left_white.append(bool(item["pixel_values_w"][:, :, 0].mean() > 0))
    assert any(left_white) and not all(left_white)  # both orientations occur


# --- Batching ----------------------------------------------------------------------------


def test_collate_stacks_tensors_and_keeps_captions(manifest):
    dataset = load_preference_dataset(manifest, resolution=8)
    batch = collate_fn([dataset[0], dataset[1]])

    assert batch["pixel_values_w"].shape == batch["pixel_values_l"].shape == (2, 3, 8, 8)
    assert batch["caption"] == ["red", "green"]
    assert torch.allclose(batch["margin"], torch.tensor([0.8, 1.0]))


# --- Latent cache ------------------------------------------------------------------------


class CountingEncoder:
    """A stand-in VAE encoder: 2x average pooling to 4 channels; counts the images it saw."""

    def __init__(self):
        self.images_seen = 0

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.images_seen += pixels.shape[0]
        pooled = torch.nn.functional.avg_pool2d(pixels, 2)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)


def test_latent_cache_is_reused_and_invalidated_when_a_file_changes(manifest, tmp_path):
    cache_dir = tmp_path / "cache"
    encoder = CountingEncoder()

    cached = cache_latents(load_preference_dataset(manifest, resolution=8), encoder, cache_dir, 1, encoder_id="vae-a")
    assert encoder.images_seen == 4
    item = cached[0]
    assert item["latents_w"].shape == item["latents_l"].shape == (4, 4, 4)
    assert item["caption"] == "red" and item["margin"] == pytest.approx(0.8)
    assert item["latents_w"][0].mean() > 0.9 and item["latents_l"][2].mean() > 0.9  # red winner, blue loser
    assert "pixel_values_w" not in item
    source = load_preference_dataset(manifest, resolution=8)[0]
    for key in ("original_size_w", "original_size_l", "crop_top_left_w", "crop_top_left_l"):
        assert torch.equal(item[key], source[key])  # the cache keeps how each image was preprocessed

    again = cache_latents(load_preference_dataset(manifest, resolution=8), encoder, cache_dir, 2, encoder_id="vae-a")
    assert encoder.images_seen == 4  # reused
    assert torch.equal(again[1]["latents_w"], cached[1]["latents_w"])
    batch = collate_fn([again[0], again[1]])
    assert batch["latents_w"].shape == (2, 4, 4, 4)

    cache_latents(load_preference_dataset(manifest, resolution=8), encoder, cache_dir, 2, encoder_id="vae-b")
    assert encoder.images_seen == 8  # another VAE never reuses the cache

    save(solid(GREEN), manifest.parent / "images" / "blue.jpg")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0].pop("loser_sha256")
    write_jsonl(manifest, rows)
    changed = cache_latents(load_preference_dataset(manifest, resolution=8), encoder, cache_dir, 2, encoder_id="vae-a")
    assert encoder.images_seen == 12  # recomputed
    assert changed[0]["latents_l"][1].mean() > 0.9  # the new green loser

    cache_latents(load_preference_dataset(manifest, resolution=16), encoder, cache_dir, 2, encoder_id="vae-a")
    assert encoder.images_seen == 16  # another resolution is another cache


def test_sft_latent_cache_yields_latents_and_captions(sft_folder, tmp_path):
    cached = cache_latents(load_sft_dataset(sft_folder, resolution=8), CountingEncoder(), tmp_path / "c", 4,
                           encoder_id="vae")
    assert cached[1]["latents"].shape == (4, 4, 4)
    assert cached[1]["caption"] == "a blue square"
    assert len(cached) == 2 and cached.report.kept == 2


def test_latent_cache_refuses_random_flip_and_random_crop(manifest, tmp_path):
    flipped = load_preference_dataset(manifest, resolution=8, random_flip=True)
    with pytest.raises(DatasetError, match="random_flip"):
        cache_latents(flipped, CountingEncoder(), tmp_path, 2, encoder_id="vae")
    cropped = load_preference_dataset(manifest, resolution=8, center_crop=False)
    with pytest.raises(DatasetError, match="center_crop"):
        cache_latents(cropped, CountingEncoder(), tmp_path, 2, encoder_id="vae")


def test_datasets_survive_pickling_for_dataloader_workers(tmp_path, manifest):
    import pickle

    red, blue = image_bytes(solid(RED)), image_bytes(solid(BLUE))
    parquet = load_preference_dataset(write_parquet(tmp_path / "p.parquet", [(red, blue, 0.0, "c")]), resolution=8)
    cached = cache_latents(load_preference_dataset(manifest, resolution=8), CountingEncoder(), tmp_path / "c", 2,
                           encoder_id="vae")
    cached[0]  # opens the cache file, which must not travel to the copy

    parquet_copy, cached_copy = pickle.loads(pickle.dumps(parquet)), pickle.loads(pickle.dumps(cached))

    assert parquet_copy[0]["pixel_values_w"][2].mean() > 0.9  # blue won (label_0 == 0)
    assert torch.equal(cached_copy[1]["latents_l"], cached[1]["latents_l"])


def test_captions_may_hold_unicode_line_separators(tmp_path):
    save(solid(RED), tmp_path / "a.png")
    caption = "first\u2028second"
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": caption}, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    assert load_sft_dataset(tmp_path, resolution=8)[0]["caption"] == caption
