"""Reading datasets, stratified sampling, class coverage and decoding to the model's input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peftlab import data
from peftlab.data import storage
from peftlab.errors import UserError
from peftlab.models import ImageSpec

from .conftest import BRIGHTNESS, CLASSES, write_image_folder
from .helpers import load_task, needs_fmnist

RGB16 = ImageSpec(16, 16, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
GRAY12 = ImageSpec(12, 12, 1, (0.5,), (0.25,))


# ---------------------------------------------------------------- stratified sampling
def sorted_labels() -> np.ndarray:
    """A class-sorted label array with unequal classes, like many datasets on disk."""
    return np.repeat(np.arange(8), [500, 300, 300, 200, 200, 150, 100, 50])  # 1800 rows


def test_stratified_sample_covers_every_class_in_proportion():
    labels = sorted_labels()
    n = 180
    idx = data.stratified_indices(labels, n, seed=0)
    assert len(idx) == n and len(np.unique(idx)) == n and idx.min() >= 0 and idx.max() < len(labels)
    counts = np.bincount(labels[idx], minlength=8)
    want = np.bincount(labels, minlength=8) * n / len(labels)  # exactly 50, 30, 30, 20, 20, 15, 10, 5
    assert np.array_equal(counts, want.astype(int))


def test_stratified_sample_largest_remainder():
    labels = np.repeat(np.arange(3), [10, 10, 10])
    counts = np.bincount(labels[data.stratified_indices(labels, 10, seed=0)], minlength=3)
    assert counts.sum() == 10 and sorted(counts) == [3, 3, 4]
    labels = sorted_labels()
    for n in (7, 33, 101, 999):
        counts = np.bincount(labels[data.stratified_indices(labels, n, seed=1)], minlength=8)
        quota = np.bincount(labels) * n / len(labels)
        assert counts.sum() == n and np.all(np.abs(counts - quota) < 1)


def test_stratified_sample_is_seeded_and_shuffled():
    labels = sorted_labels()
    a = data.stratified_indices(labels, 100, seed=3)
    assert np.array_equal(a, data.stratified_indices(labels, 100, seed=3))
    assert not np.array_equal(np.sort(a), np.sort(data.stratified_indices(labels, 100, seed=4)))
    assert not np.all(np.diff(labels[a]) >= 0)  # not class-sorted: the order is shuffled


def test_first_n_rows_miss_classes_that_stratified_covers():
    labels = sorted_labels()
    names = [f"c{i}" for i in range(8)]
    first = data.coverage(labels[:180], names, min_per_class=5)
    assert first["classes_present"] == 1 and len(first["missing"]) == 7
    assert data.coverage_problems(first, "train", 5) == ["train split misses 7 of 8 classes (c1, c2, c3, c4, c5 ...)"]
    strat = data.coverage(labels[data.stratified_indices(labels, 180, seed=0)], names, min_per_class=5)
    assert strat["classes_present"] == 8 and strat["missing"] == [] and strat["below_min"] == []
    assert strat["min_per_class"] == 5 and data.coverage_problems(strat, "train", 5) == []


def test_sample_larger_than_split_is_an_error():
    with pytest.raises(UserError, match="asked for 11 examples but the split has only 10"):
        data.stratified_indices(np.arange(10) % 2, 11, seed=0)


# ---------------------------------------------------------------- coverage on a real folder
def test_coverage_warns_when_eval_misses_a_class(tmp_path):
    root = write_image_folder(
        tmp_path, {"train": {c: 6 for c in CLASSES}, "test": {"dark": 3, "light": 3}}
    )  # no 'mid' test images
    (root / "test" / "mid").mkdir()
    warnings: list[str] = []
    task = load_task(str(root), RGB16, seed=0, min_per_class=5, warn=warnings.append)
    assert task.label_names == CLASSES
    assert task.coverage["eval"]["missing"] == ["mid"]
    assert task.coverage["eval"]["per_class"] == {"dark": 3, "light": 3, "mid": 0}
    assert task.coverage["train"]["missing"] == [] and task.coverage["train"]["min_per_class"] == 6
    assert "WARNING class coverage: eval split misses 1 of 3 classes (mid)" in warnings
    assert "WARNING class coverage: eval split has fewer than 5 examples for 2 classes (dark, light)" in warnings
    assert len(warnings) == 2 and task.notes == [w.removeprefix("WARNING class coverage: ") for w in warnings]
    with pytest.raises(
        UserError,
        match=r"class coverage: eval split misses 1 of 3 classes \(mid\) "
        r"\(drop --strict-coverage",
    ):
        load_task(str(root), RGB16, seed=0, strict_coverage=True, warn=warnings.append)


def test_full_coverage_gives_no_warning(image_folder):
    warnings: list[str] = []
    task = load_task(str(image_folder), RGB16, min_per_class=4, warn=warnings.append)
    assert warnings == [] and task.notes == []
    assert task.coverage["train"]["per_class"] == {c: 8 for c in CLASSES}
    assert task.coverage["eval"]["per_class"] == {c: 4 for c in CLASSES}


# ---------------------------------------------------------------- image folders and decoding
def test_image_folder_task(image_folder):
    task = load_task(
        str(image_folder), RGB16, train_size=12, eval_size=6, seed=0, min_per_class=2, warn=lambda s: pytest.fail(s)
    )
    assert task.label_names == CLASSES and task.num_classes == 3
    assert task.train.images.shape == (12, 3, 16, 16) and task.train.images.dtype == torch.uint8
    assert task.eval.images.shape == (6, 3, 16, 16) and task.eval.name == "test"
    assert torch.equal(torch.bincount(task.train.labels, minlength=3), torch.tensor([4, 4, 4]))
    assert torch.equal(torch.bincount(task.eval.labels, minlength=3), torch.tensor([2, 2, 2]))
    # every image mode decoded to the right brightness (+-20 noise, averaged): labels match pixels
    for split in (task.train, task.eval):
        means = split.images.float().mean((1, 2, 3))
        for m, y in zip(means, split.labels):
            assert abs(m - BRIGHTNESS[CLASSES[y]]) < 12, (float(m), CLASSES[y])


def test_splits_larger_than_memory_are_mapped_files(image_folder, tmp_path, monkeypatch):
    """Past IN_MEMORY_LIMIT the decoded images live in a memory-mapped file (unlinked at once: nothing
    stays in the cache folder) and hold the same pixels as in RAM."""
    load = lambda: load_task(
        str(image_folder),
        RGB16,
        train_size=12,
        eval_size=6,
        seed=0,  # noqa: E731
        min_per_class=2,
        warn=lambda s: None,
    )
    in_ram = load()
    assert not data.is_mapped(in_ram.train.images)
    monkeypatch.setattr(storage, "IN_MEMORY_LIMIT", 0)
    monkeypatch.setenv("PEFTLAB_CACHE_DIR", str(tmp_path / "cache"))
    mapped = load()  # no cache shared between the loads: decoded again
    for a, b in ((in_ram.train, mapped.train), (in_ram.eval, mapped.eval)):
        assert data.is_mapped(b.images) and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PEFTLAB_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(UserError, match="cannot create a file in .*file for the decoded images.*PEFTLAB_CACHE_DIR"):
        load()


def test_image_folder_all_modes_decode_to_grayscale_model(image_folder):
    task = load_task(str(image_folder), GRAY12, warn=lambda s: None)
    assert task.train.images.shape == (24, 1, 12, 12)
    means = task.train.images.float().mean((1, 2, 3))
    for m, y in zip(means, task.train.labels):
        assert abs(m - BRIGHTNESS[CLASSES[y]]) < 12


def test_decode_modes_exactly(tmp_path):
    """Grayscale repeats on 3 channels, palette keeps colour, transparency composites on white."""
    from PIL import Image

    d = tmp_path / "modes"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir()
    Image.new("L", (8, 8), 100).save(d / "a" / "0-gray.png")
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # one fully transparent pixel
    rgba.save(d / "a" / "1-rgba.png")
    Image.new("RGB", (8, 8), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "b" / "0-pal.png")
    Image.new("RGB", (8, 8), (0, 0, 250)).save(d / "b" / "1-blue.jpg", quality=100)
    (d / "b" / "notes.txt").write_text("not an image")  # not an image suffix: ignored
    names, train, held = data.read_source(str(d))
    assert names == ["a", "b"] and held is None and list(train.labels) == [0, 0, 1, 1]
    split = data.decode(train, ImageSpec(8, 8, 3, (0.5,) * 3, (0.5,) * 3), workers=2)
    img = split.images
    assert torch.all(img[0] == 100)
    assert img[1][:, 0, 0].tolist() == [255, 255, 255]
    assert img[1][:, 4, 4].tolist() == [10, 20, 30]
    assert torch.all(img[2][0] == 200) and torch.all(img[2][1:] == 0)
    assert torch.all(img[3][2] >= 245) and torch.all(img[3][:2] <= 5)


def test_folder_without_eval_split_holds_out_a_stratified_fifth(tmp_path):
    root = write_image_folder(tmp_path, {"all": {c: 10 for c in CLASSES}})
    task = load_task(str(root / "all"), RGB16, seed=0, min_per_class=1, warn=lambda s: None)
    assert len(task.train) == 24 and len(task.eval) == 6
    assert torch.equal(torch.bincount(task.eval.labels), torch.tensor([2, 2, 2]))
    assert task.eval.name == "train (held out 20%)"
    assert task.notes == ["no validation/test split: evaluating on 6 held-out training images"]


def test_save_to_disk_dataset(hf_dataset_dir):
    task = load_task(str(hf_dataset_dir), RGB16, min_per_class=1, warn=lambda s: pytest.fail(s))
    assert task.label_names == CLASSES
    assert (len(task.train), len(task.eval)) == (18, 9) and task.eval.name == "test"
    means = task.train.images.float().mean((1, 2, 3))
    for m, y in zip(means, task.train.labels):
        assert abs(m - BRIGHTNESS[CLASSES[y]]) < 12


def test_save_to_disk_wrong_columns_and_splits(hf_dataset_dir):
    with pytest.raises(UserError, match="cannot find the image column .*pass --image-column"):
        load_task(str(hf_dataset_dir), RGB16, image_column="picture")
    with pytest.raises(UserError, match="dataset has no split 'dev'; it has: train, test"):
        load_task(str(hf_dataset_dir), RGB16, eval_split="dev")


def test_dataset_errors(tmp_path):
    with pytest.raises(UserError, match=f"dataset '{tmp_path / 'missing'}' does not exist; pass an image folder"):
        data.read_source(str(tmp_path / "missing"))
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(UserError, match="is not a folder"):
        data.read_source(str(tmp_path / "file.png"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match="has no class subfolders"):
        data.read_source(str(tmp_path / "flat"))
    with pytest.raises(UserError, match="unknown built-in task 'fashion-mnist:3-4'"):
        data.read_source("fashion-mnist:3-4")
    one = write_image_folder(tmp_path / "one", {"train": {"dark": 3}})
    with pytest.raises(UserError, match="has 1 class; a classifier needs at least 2"):
        load_task(str(one), RGB16)


# ---------------------------------------------------------------- built-in Fashion-MNIST
@needs_fmnist
def test_fashion_mnist_task_is_classes_5_to_9_relabelled():
    names, train, test = data.read_source("fashion-mnist:5-9")
    assert names == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert len(train.labels) == 30000 and len(test.labels) == 5000  # 6000 / 1000 per class
    assert np.array_equal(np.bincount(train.labels), [6000] * 5)
    assert train.items.shape == (30000, 28, 28) and train.items.dtype == np.uint8
    task = load_task("fashion-mnist:5-9", GRAY12, train_size=50, eval_size=25, seed=0, warn=lambda s: pytest.fail(s))
    assert task.train.images.shape == (50, 1, 12, 12) and len(task.eval) == 25
    assert task.coverage["train"]["per_class"] == dict.fromkeys(names, 10)
    assert task.coverage["eval"]["per_class"] == dict.fromkeys(names, 5)
    # resized but still images: background dark, a bright garment in the middle
    assert task.train.images[:, :, 4:8, 4:8].float().mean() > task.train.images[:, :, :1, :].float().mean()


@needs_fmnist
def test_fashion_mnist_all_classes_to_rgb():
    task = load_task(
        "fashion-mnist:all", RGB16, train_size=20, eval_size=10, min_per_class=1, warn=lambda s: pytest.fail(s)
    )
    assert task.num_classes == 10 and task.train.images.shape == (20, 3, 16, 16)
    assert torch.equal(task.train.images[:, 0], task.train.images[:, 1])  # grey copied to every channel
