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
def test_coverage_warns_when_test_misses_a_class(tmp_path):
    root = write_image_folder(
        tmp_path, {"train": {c: 6 for c in CLASSES}, "val": {c: 3 for c in CLASSES}, "test": {"dark": 3, "light": 3}}
    )  # no 'mid' test images
    (root / "test" / "mid").mkdir()
    warnings: list[str] = []
    task = load_task(str(root), RGB16, seed=0, min_per_class=3, warn=warnings.append)
    assert task.label_names == CLASSES
    assert task.coverage["test"]["missing"] == ["mid"]
    assert task.coverage["test"]["per_class"] == {"dark": 3, "light": 3, "mid": 0}
    assert task.coverage["train"]["missing"] == [] and task.coverage["train"]["min_per_class"] == 6
    assert task.coverage["val"]["per_class"] == dict.fromkeys(CLASSES, 3)
    assert warnings == ["WARNING class coverage: test split misses 1 of 3 classes (mid)"]
    assert task.notes == [
        "training images in 'train': all 18 (fewer than the default --train-size 8000)",
        "test split misses 1 of 3 classes (mid)",
    ]
    with pytest.raises(
        UserError, match=r"class coverage: test split misses 1 of 3 classes \(mid\) \(drop --strict-coverage"
    ):
        load_task(str(root), RGB16, seed=0, min_per_class=3, strict_coverage=True, warn=warnings.append)


def test_a_validation_slice_that_misses_classes_is_coverage_checked(image_folder):
    warnings: list[str] = []
    task = load_task(str(image_folder), RGB16, val_size=2, min_per_class=1, warn=warnings.append)
    assert len(task.val) == 2 and task.coverage["val"]["classes_present"] == 2
    assert warnings == [
        f"WARNING class coverage: val split misses 1 of 3 classes ({task.coverage['val']['missing'][0]})"
    ]
    with pytest.raises(UserError, match=r"val split misses 1 of 3 classes .* \(drop --strict-coverage"):
        load_task(str(image_folder), RGB16, val_size=2, min_per_class=1, strict_coverage=True, warn=lambda s: None)


def test_full_coverage_gives_no_warning(image_folder):
    warnings: list[str] = []
    task = load_task(str(image_folder), RGB16, train_size=0, val_per_class=2, min_per_class=2, warn=warnings.append)
    assert warnings == [] and task.notes == []
    assert task.coverage["train"]["per_class"] == {c: 6 for c in CLASSES}  # 8 per class, 2 of them validate
    assert task.coverage["val"]["per_class"] == {c: 2 for c in CLASSES}
    assert task.coverage["test"]["per_class"] == {c: 4 for c in CLASSES}


# ---------------------------------------------------------------- three splits, from every kind of source
def _check_disjoint(task) -> None:
    """No source row and no content hash in two splits; the record says so."""
    roles = ("train", "val", "test")
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            sa, sb = getattr(task, a), getattr(task, b)
            if sa.source == sb.source:
                assert not set(sa.origin.tolist()) & set(sb.origin.tolist()), (a, b)
            assert not set(sa.hashes().tolist()) & set(sb.hashes().tolist()), (a, b)
    check = task.splits["check"]
    assert check["disjoint"] and not any(check["identical_images"].values())


def test_three_disjoint_splits_from_every_source_kind(image_folder, hf_dataset_dir, tmp_path):
    quiet = {"min_per_class": 1, "warn": lambda s: None}
    # a folder with train/ and test/: validation carved out of train
    t = load_task(image_folder, RGB16, **quiet)
    assert (len(t.train), len(t.val), len(t.test)) == (19, 5, 12) and t.val.source == t.train.source == "train"
    assert t.splits["val"]["how"].startswith("stratified slice of the 'train' split") and t.test.name == "test"
    _check_disjoint(t)
    # train/, val/ and test/: each its own
    three = write_image_folder(
        tmp_path / "three",
        {"train": {c: 4 for c in CLASSES}, "val": {c: 2 for c in CLASSES}, "test": {c: 2 for c in CLASSES}},
    )
    t = load_task(three, RGB16, **quiet)
    assert (len(t.train), len(t.val), len(t.test)) == (12, 6, 6) and (t.val.name, t.test.name) == ("val", "test")
    _check_disjoint(t)
    # train/ and validation/ only: validation is the test split, validation carved from train
    two = write_image_folder(
        tmp_path / "two", {"train": {c: 5 for c in CLASSES}, "validation": {c: 2 for c in CLASSES}}
    )
    t = load_task(two, RGB16, **quiet)
    assert t.test.name == "validation" and len(t.test) == 6 and t.val.source == "train" and len(t.val) == 3
    assert any("the 'validation' split is the test split" in n for n in t.notes)
    _check_disjoint(t)
    # one folder of classes: test held out, validation carved, both out of the same pool
    one = write_image_folder(tmp_path / "one", {"all": {c: 10 for c in CLASSES}})
    t = load_task(one / "all", RGB16, **quiet)
    assert (len(t.train), len(t.val), len(t.test)) == (19, 5, 6) and t.test.name == "train (held out 20%)"
    assert t.train.source == t.val.source == t.test.source == "train"
    _check_disjoint(t)
    # a datasets.save_to_disk folder (train/test): validation carved from train
    t = load_task(hf_dataset_dir, RGB16, **quiet)
    assert (len(t.train), len(t.val), len(t.test)) == (14, 4, 9) and t.test.name == "test"
    _check_disjoint(t)


@needs_fmnist
def test_fashion_mnist_validation_comes_out_of_its_train_split():
    t = load_task("fashion-mnist:5-9", GRAY12, train_size=300, val_size=100, test_size=50, warn=lambda s: None)
    assert (len(t.train), len(t.val), len(t.test)) == (300, 100, 50)
    assert t.val.source == t.train.source == "train" and t.test.source == "test"
    _check_disjoint(t)


def test_identical_images_across_splits_are_found_and_said(tmp_path):
    import shutil

    root = write_image_folder(tmp_path, {"train": {c: 6 for c in CLASSES}, "test": {c: 3 for c in CLASSES}})
    shutil.copy(root / "train" / "dark" / "000.png", root / "test" / "dark" / "copy.png")
    warnings: list[str] = []
    t = load_task(root, RGB16, min_per_class=1, warn=warnings.append)
    dupes = t.splits["check"]["identical_images"]
    assert dupes["train-test"] + dupes["val-test"] == 1 and t.splits["check"]["disjoint"]
    assert any("1 test image(s) are pixel-identical to" in w for w in warnings)


def test_per_class_samples_and_their_errors(image_folder):
    t = load_task(image_folder, RGB16, train_per_class=3, val_per_class=2, min_per_class=1, warn=lambda s: None)
    assert torch.equal(torch.bincount(t.train.labels), torch.tensor([3, 3, 3]))
    assert torch.equal(torch.bincount(t.val.labels), torch.tensor([2, 2, 2]))
    with pytest.raises(
        UserError,
        match=r"class 'dark' has only 6 training images in 'train', fewer than "
        r"--train-per-class 7",
    ):
        load_task(image_folder, RGB16, train_per_class=7, val_per_class=2, warn=lambda s: None)


def test_sizes_the_data_cannot_give(image_folder):
    with pytest.raises(UserError, match=r"--val-size 24 leaves no training images in 'train' \(24 after"):
        load_task(image_folder, RGB16, val_size=24, warn=lambda s: None)
    with pytest.raises(UserError, match=r"asked for 30 images in 'train' but there are only 24; lower --val-size"):
        load_task(image_folder, RGB16, val_size=30, warn=lambda s: None)
    with pytest.raises(UserError, match=r"asked for 13 test images in 'test' but there are only 12; lower --test-size"):
        load_task(image_folder, RGB16, test_size=13, warn=lambda s: None)


def test_default_sizes_shrink_to_a_small_dataset_and_say_so(image_folder):
    t = load_task(image_folder, RGB16, min_per_class=1, warn=lambda s: None)
    assert len(t.train) == 19 and len(t.test) == 12  # the defaults (8000, 5000) are more than there is
    assert t.notes == ["training images in 'train': all 19 (fewer than the default --train-size 8000)"]


# ---------------------------------------------------------------- image folders and decoding
def test_image_folder_task(image_folder):
    task = load_task(
        str(image_folder),
        RGB16,
        train_size=12,
        val_size=3,
        test_size=6,
        seed=0,
        min_per_class=1,
        warn=lambda s: pytest.fail(s),
    )
    assert task.label_names == CLASSES and task.num_classes == 3
    assert task.train.images.shape == (12, 3, 16, 16) and task.train.images.dtype == torch.uint8
    assert task.test.images.shape == (6, 3, 16, 16) and task.test.name == "test"
    assert torch.equal(torch.bincount(task.train.labels, minlength=3), torch.tensor([4, 4, 4]))
    assert torch.equal(torch.bincount(task.val.labels, minlength=3), torch.tensor([1, 1, 1]))
    assert torch.equal(torch.bincount(task.test.labels, minlength=3), torch.tensor([2, 2, 2]))
    # every image mode decoded to the right brightness (+-20 noise, averaged): labels match pixels
    for split in (task.train, task.val, task.test):
        means = split.images.float().mean((1, 2, 3))
        for m, y in zip(means, split.labels):
            assert abs(m - BRIGHTNESS[CLASSES[y]]) < 12, (float(m), CLASSES[y])


def test_splits_larger_than_memory_are_mapped_files(image_folder, tmp_path, monkeypatch):
    """Past IN_MEMORY_LIMIT the decoded images live in a memory-mapped file (unlinked at once: nothing
    stays in the cache folder) and hold the same pixels as in RAM."""

    def load():
        return load_task(image_folder, RGB16, train_size=12, test_size=6, min_per_class=1, warn=lambda s: None)

    in_ram = load()
    assert not data.is_mapped(in_ram.train.images)
    monkeypatch.setattr(storage, "IN_MEMORY_LIMIT", 0)
    monkeypatch.setenv("PEFTLAB_CACHE_DIR", str(tmp_path / "cache"))
    mapped = load()  # no cache shared between the loads: decoded again
    for role in ("train", "val", "test"):
        a, b = getattr(in_ram, role), getattr(mapped, role)
        assert data.is_mapped(b.images) and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PEFTLAB_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(UserError, match="cannot create a file in .*file for the decoded images.*PEFTLAB_CACHE_DIR"):
        load()


def test_image_folder_all_modes_decode_to_grayscale_model(image_folder):
    task = load_task(str(image_folder), GRAY12, warn=lambda s: None)
    assert task.train.images.shape == (19, 1, 12, 12)
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
    names, splits = data.read_source(str(d))
    train = splits["train"]
    assert names == ["a", "b"] and splits["test"] is None and list(train.labels) == [0, 0, 1, 1]
    split = data.decode(train, ImageSpec(8, 8, 3, (0.5,) * 3, (0.5,) * 3), workers=2)
    img = split.images
    assert torch.all(img[0] == 100)
    assert img[1][:, 0, 0].tolist() == [255, 255, 255]
    assert img[1][:, 4, 4].tolist() == [10, 20, 30]
    assert torch.all(img[2][0] == 200) and torch.all(img[2][1:] == 0)
    assert torch.all(img[3][2] >= 245) and torch.all(img[3][:2] <= 5)


def test_folder_without_test_split_holds_out_a_stratified_fifth(tmp_path):
    root = write_image_folder(tmp_path, {"all": {c: 10 for c in CLASSES}})
    task = load_task(str(root / "all"), RGB16, seed=0, min_per_class=1, warn=lambda s: None)
    assert len(task.train) + len(task.val) == 24 and len(task.test) == 6
    assert torch.equal(torch.bincount(task.test.labels), torch.tensor([2, 2, 2]))
    assert task.test.name == "train (held out 20%)"
    assert "no test split: testing on 6 held-out training images" in task.notes


def test_save_to_disk_dataset(hf_dataset_dir):
    task = load_task(str(hf_dataset_dir), RGB16, min_per_class=1, warn=lambda s: pytest.fail(s))
    assert task.label_names == CLASSES
    assert (len(task.train), len(task.val), len(task.test)) == (14, 4, 9) and task.test.name == "test"
    means = task.train.images.float().mean((1, 2, 3))
    for m, y in zip(means, task.train.labels):
        assert abs(m - BRIGHTNESS[CLASSES[y]]) < 12


def test_save_to_disk_wrong_columns_and_splits(hf_dataset_dir):
    with pytest.raises(UserError, match="cannot find the image column .*pass --image-column"):
        load_task(str(hf_dataset_dir), RGB16, image_column="picture")
    with pytest.raises(UserError, match=r"dataset has no split 'dev' \(--test-split\); it has: train, test"):
        load_task(str(hf_dataset_dir), RGB16, test_split="dev")


def test_dataset_errors(tmp_path):
    with pytest.raises(UserError, match=f"dataset '{tmp_path / 'missing'}' does not exist; pass an image folder"):
        data.read_source(str(tmp_path / "missing"))
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(UserError, match="is not a folder"):
        data.read_source(str(tmp_path / "file.png"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match="has no class subfolders"):
        data.read_source(str(tmp_path / "flat"))
    for bad in ("fashion-mnist:3-12", "fashion-mnist:4", "fashion-mnist:3,3", "fashion-mnist:7-5", "fashion-mnist:x"):
        with pytest.raises(UserError, match=f"unknown built-in task '{bad}'.*e.g. fashion-mnist:3,4,6,7,9"):
            data.read_source(bad)
    one = write_image_folder(tmp_path / "one", {"train": {"dark": 3}})
    with pytest.raises(UserError, match="has 1 class; a classifier needs at least 2"):
        load_task(str(one), RGB16)


# ---------------------------------------------------------------- built-in Fashion-MNIST
@needs_fmnist
def test_fashion_mnist_task_is_classes_5_to_9_relabelled():
    names, splits = data.read_source("fashion-mnist:5-9")
    train, test = splits["train"], splits["test"]
    assert names == ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert len(train.labels) == 30000 and len(test.labels) == 5000  # 6000 / 1000 per class
    assert np.array_equal(np.bincount(train.labels), [6000] * 5)
    assert train.items.shape == (30000, 28, 28) and train.items.dtype == np.uint8
    task = load_task(
        "fashion-mnist:5-9", GRAY12, train_size=50, val_size=25, test_size=25, seed=0, warn=lambda s: pytest.fail(s)
    )
    assert task.train.images.shape == (50, 1, 12, 12) and len(task.test) == 25
    assert task.coverage["train"]["per_class"] == dict.fromkeys(names, 10)
    assert task.coverage["test"]["per_class"] == dict.fromkeys(names, 5)
    # resized but still images: background dark, a bright garment in the middle
    assert task.train.images[:, :, 4:8, 4:8].float().mean() > task.train.images[:, :, :1, :].float().mean()


def test_fashion_mnist_class_lists():
    assert data.fmnist_classes("fashion-mnist:3,4,6,7,9") == [3, 4, 6, 7, 9]
    assert data.fmnist_classes("fashion-mnist:9,0-2") == [9, 0, 1, 2]  # in the order named: label 0 is class 9
    assert data.fmnist_classes("fashion-mnist:all") == list(range(10))
    assert [data.fmnist_classes(t) for t in data.FMNIST_TASKS] == [list(r) for r in data.FMNIST_TASKS.values()]
    for bad in (
        "fashion-mnist:",
        "fashion-mnist:5",
        "fashion-mnist:1,1",
        "fashion-mnist:8-10",
        "fashion-mnist:2-",
        "mnist:0-4",
    ):
        assert data.fmnist_classes(bad) is None, bad


@needs_fmnist
def test_fashion_mnist_class_list_task_relabels_in_order():
    names, splits = data.read_source("fashion-mnist:7,3")
    assert names == ["Sneaker", "Dress"]
    raw = data.read_source("fashion-mnist:all")[1]["train"]
    train = splits["train"]
    assert len(train.labels) == 12000 and np.array_equal(np.bincount(train.labels), [6000, 6000])
    assert np.array_equal(raw.labels[train.origin], np.where(train.labels == 0, 7, 3))  # label 0 is class 7


@needs_fmnist
def test_fashion_mnist_all_classes_to_rgb():
    task = load_task(
        "fashion-mnist:all",
        RGB16,
        train_size=20,
        val_size=10,
        test_size=10,
        min_per_class=1,
        warn=lambda s: pytest.fail(s),
    )
    assert task.num_classes == 10 and task.train.images.shape == (20, 3, 16, 16)
    assert torch.equal(task.train.images[:, 0], task.train.images[:, 1])  # grey copied to every channel
