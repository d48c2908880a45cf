"""Bad input, one kind per test: each gets one clear line (what is wrong, what to do), a non-zero exit
where the run cannot go on, never a traceback and never a silently corrupted result (issue 5)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from peftlab import data
from peftlab.data.decoding import skip_stats
from peftlab.errors import UserError
from peftlab.models import BUNDLED_NAME, ImageSpec

from .conftest import BRIGHTNESS, CLASSES, read_json, write_image_folder
from .helpers import load_task, run_cli
from .helpers import run_args as _run_args

RGB16 = ImageSpec(16, 16, 3, (0.5,) * 3, (0.25,) * 3)


def spec(side: int, channels: int = 3) -> ImageSpec:
    return ImageSpec(side, side, channels, (0.5,) * channels, (0.25,) * channels)


def run_args(model: Path, dataset, out: Path, *extra: str) -> list[str]:
    """head for one epoch on all of a tiny dataset."""
    return _run_args(model, dataset, out, "--methods", "head", *extra, epochs=1)


def assert_one_error_line(rc: int, err: str, message: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("peftlab: error: "), err
    assert message in lines[0], lines[0]


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, also where huggingface_hub and datasets read it once at import."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def add_bad_files(d: Path) -> list[Path]:
    """An empty PNG, a '.jpg' that is text, a truncated JPEG in d (a class folder); and a notes.txt."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 40, 40)).save(buf, "JPEG")
    bad = [d / "zz-empty.png", d / "zz-text.jpg", d / "zz-truncated.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_text("this is not a JPEG")
    bad[2].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "notes.txt").write_text("taken on a sunny day")
    (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: passed over without a word
    return bad


# ---------------------------------------------------------------- unreadable files
def test_unreadable_images_are_skipped_counted_and_reported_once(tmp_path):
    root = write_image_folder(
        tmp_path, {"train": {c: 6 for c in CLASSES}, "val": {c: 2 for c in CLASSES}, "test": {c: 3 for c in CLASSES}}
    )
    bad = add_bad_files(root / "train" / "dark")
    warnings: list[str] = []
    task = load_task(str(root), RGB16, train_size=0, min_per_class=1, max_bad_fraction=0.2, warn=warnings.append)
    # all of train was asked for: no spare images, so the 3 unreadable ones are dropped, not blanked
    assert len(task.train) == 18 and task.coverage["train"]["per_class"] == dict.fromkeys(CLASSES, 6)
    means = task.train.images.float().mean((1, 2, 3))
    for m, y in zip(means, task.train.labels):  # labels and images still aligned, no black stand-ins
        assert abs(m - BRIGHTNESS[CLASSES[y]]) < 12
    assert task.skipped["train"] == {
        "tried": 21,
        "unreadable": 3,
        "replaced": 0,
        "dropped": 3,
        "unlabelled": 0,
        "not_images": 1,
        "unreadable_examples": [
            f"{bad[0]} (empty file)",
            f"{bad[1]} (not an image Pillow can read)",
            f"{bad[2]} (truncated file)",
        ],
        "not_image_examples": [str(root / "train" / "dark" / "notes.txt")],
    }
    assert task.skipped["test"]["tried"] == 9 and task.skipped["test"]["unreadable"] == 0
    assert task.skipped["val"]["tried"] == 6 and task.skipped["val"]["unreadable"] == 0
    assert warnings == [
        f"WARNING ignored 1 file(s) in class folders that are not images by their type (e.g. "
        f"{root}/train/dark/notes.txt); image types read: .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp",
        f"WARNING skipped unreadable images: train 3 of 21 tried, 3 fewer images (e.g. {bad[0]} (empty file); "
        f"{bad[1]} (not an image Pillow can read); {bad[2]} (truncated file))",
    ]
    assert task.notes == [w.removeprefix("WARNING ") for w in warnings]


def test_unreadable_images_in_a_sample_are_replaced_by_unused_ones_of_their_class(tmp_path):
    root = write_image_folder(tmp_path, {"all": {c: 6 for c in CLASSES}})
    bad = add_bad_files(root / "all" / "dark")
    names, splits = data.read_source(str(root / "all"))
    pool = splits["train"]
    bad_idx = [pool.items.index(str(p)) for p in bad]
    good_dark = [i for i in np.flatnonzero(pool.labels == 0) if i not in bad_idx]
    idx = np.array(bad_idx + good_dark[:2] + [int(np.flatnonzero(pool.labels == 1)[0])])  # 3 bad of 6
    stats = skip_stats()
    split = data.decode_sample(pool, idx, RGB16, seed=0, max_bad_fraction=0.5, split_key="train", stats=stats)
    assert split.labels.tolist() == [0, 0, 0, 0, 0, 1]  # same size, same classes, same order
    want = torch.tensor([BRIGHTNESS["dark"]] * 5 + [BRIGHTNESS[CLASSES[1]]], dtype=torch.float32)
    assert torch.all((split.images.float().mean((1, 2, 3)) - want).abs() < 12)
    assert len({bytes(img.numpy()) for img in split.images}) == 6  # each replacement an unused image
    assert (stats["tried"], stats["unreadable"], stats["replaced"], stats["dropped"]) == (9, 3, 3, 0)
    # too few spares: 8 of the 9 dark files asked for, 3 of them unreadable; the one left over replaces one
    stats = skip_stats()
    split = data.decode_sample(
        pool, np.array(bad_idx + good_dark[:5]), RGB16, seed=0, max_bad_fraction=0.9, split_key="train", stats=stats
    )
    assert split.labels.tolist() == [0] * 6 and len({bytes(img.numpy()) for img in split.images}) == 6
    assert (stats["tried"], stats["unreadable"], stats["replaced"], stats["dropped"]) == (9, 3, 1, 2)


def test_too_many_unreadable_images_is_an_error(tiny_vit, tmp_path, capsys):
    root = write_image_folder(
        tmp_path / "data",
        {"train": {c: 6 for c in CLASSES}, "val": {c: 2 for c in CLASSES}, "test": {c: 3 for c in CLASSES}},
    )
    bad = add_bad_files(root / "train" / "dark")
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, root, tmp_path / "out"))
    assert_one_error_line(
        rc,
        err,
        f"peftlab: error: train split: 3 of 21 images tried are unreadable (14%, more "
        f"than --max-bad-fraction 0.1), e.g. {bad[0]} (empty file); {bad[1]} (not an "
        f"image Pillow can read); {bad[2]} (truncated file); fix or remove those files, "
        "or raise --max-bad-fraction",
    )
    assert not list(tmp_path.rglob("result.json"))
    with pytest.raises(UserError, match="--max-bad-fraction must be between 0 and 1"):
        load_task(str(root), RGB16, max_bad_fraction=1.5)


def test_a_few_unreadable_images_warn_once_and_the_run_goes_on(tiny_vit, tmp_path, capsys):
    root = write_image_folder(
        tmp_path / "data",
        {"train": {c: 7 for c in CLASSES}, "val": {c: 2 for c in CLASSES}, "test": {c: 3 for c in CLASSES}},
    )
    (root / "train" / "mid" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    rc, out, err = run_cli(capsys, *run_args(tiny_vit, root, tmp_path / "out"))
    assert rc == 0 and err == ""
    line = (
        f"WARNING skipped unreadable images: train 1 of 22 tried, 1 fewer images "
        f"(e.g. {root}/train/mid/broken.png (not an image Pillow can read))"
    )
    assert out.splitlines() == [line]  # --quiet: the warning is all there is
    r = read_json(tmp_path / "out" / "head-seed0" / "result.json")
    assert r["data"]["notes"] == [line.removeprefix("WARNING ")] and r["data"]["train_examples"] == 21
    assert r["coverage"]["train"]["per_class"] == dict.fromkeys(CLASSES, 7)


# ---------------------------------------------------------------- image modes, size, orientation
def test_image_modes_convert_to_the_right_pixel_values(tmp_path):
    from PIL import Image

    d = tmp_path / "modes"
    for c in ("a", "b"):
        (d / c).mkdir(parents=True)
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(d / "a" / "0-ramp16.png")  # 16-bit grey, 0..65535
    Image.fromarray(np.full((16, 16), 4112, np.uint16)).save(d / "a" / "1-dark16.png")  # 4112 = 16 * 257
    rgb = Image.new("RGB", (16, 16), (200, 30, 60))
    rgb.convert("CMYK").save(d / "a" / "2-cmyk.jpg", quality=100)
    rgb.convert("CMYK").save(d / "a" / "3-cmyk.tif")
    Image.new("L", (16, 16), 77).save(d / "b" / "0-gray.png")
    Image.new("RGBA", (16, 16), (0, 0, 200, 128)).save(d / "b" / "1-half-transparent.png")
    Image.new("RGB", (16, 16), (0, 150, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "b" / "2-pal.png")
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(d / "b" / "3-float.tif")  # mode F in [0, 1]
    names, splits = data.read_source(str(d))
    raw = splits["train"]
    assert [Path(p).name for p in raw.items] == [
        "0-ramp16.png",
        "1-dark16.png",
        "2-cmyk.jpg",
        "3-cmyk.tif",
        "0-gray.png",
        "1-half-transparent.png",
        "2-pal.png",
        "3-float.tif",
    ]
    assert Image.open(raw.items[0]).mode == "I;16" and Image.open(raw.items[7]).mode == "F"
    img = data.decode(raw, spec(16)).images
    want = torch.from_numpy(np.rint(ramp / 257).astype(np.uint8))
    assert torch.equal(img[0][0], want) and img[0].min() == 0 and img[0].max() == 255  # 0..65535 -> 0..255
    assert torch.equal(img[0][0], img[0][1]) and torch.equal(img[0][0], img[0][2])
    assert torch.all(img[1] == 16)  # a dark 16-bit image stays dark: scaled by bit depth, not stretched
    for k in (2, 3):  # CMYK -> RGB
        assert (img[k][:, 8, 8].int() - torch.tensor([200, 30, 60])).abs().max() <= 3, img[k][:, 8, 8]
    assert torch.all(img[4] == 77)  # grey on all three channels
    assert img[5][:, 8, 8].tolist() == [127, 127, 227]  # 50% blue over white: 255 * 127/255 + 200 * 128/255
    assert img[6][:, 8, 8].tolist() == [0, 150, 0]
    assert torch.all(img[7] == 128)
    gray = data.decode(raw, spec(16, channels=1)).images  # and to a one-channel model
    assert torch.equal(gray[0][0], want) and torch.all(gray[1] == 16) and torch.all(gray[4] == 77)


def test_huge_jpeg_decodes_at_reduced_scale(tmp_path, monkeypatch):
    from PIL import Image

    arr = np.zeros((3000, 4000), np.uint8)
    arr[:, 2000:] = 255  # left half black, right half white
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(arr).convert("RGB").save(tmp_path / "a" / "big.jpg", quality=90)
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "small.png")
    raw = data.read_source(str(tmp_path))[1]["train"]
    sizes = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, *a, **k: sizes.append(self.size) or resize(self, *a, **k))
    t0 = time.perf_counter()
    img = data.decode(raw, RGB16).images
    seconds = time.perf_counter() - t0
    assert sorted(sizes) == [(8, 8), (500, 375)]  # JPEG draft mode: decoded at 1/8 scale, not 4000x3000
    assert torch.all(img[0][:, :, :6] < 10) and torch.all(img[0][:, :, 10:] > 245)
    assert seconds < 2, seconds


@pytest.mark.parametrize("orientation, top, bottom", [(1, None, None), (6, 0, 255), (8, 255, 0)])
def test_exif_orientation_is_applied(orientation, top, bottom, tmp_path):
    """A 32x16 photo, left half black, right half white, whose EXIF says how to turn it for display."""
    from PIL import Image

    arr = np.zeros((16, 32), np.uint8)
    arr[:, 16:] = 255
    img = Image.fromarray(arr).convert("RGB")
    exif = img.getexif()
    exif[0x0112] = orientation
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        img.save(tmp_path / c / "photo.jpg", quality=100, exif=exif)
    raw = data.read_source(str(tmp_path))[1]["train"]
    out = data.decode(raw, ImageSpec(8, 16, 1, (0.5,), (0.25,))).images[0][0].int()  # 16 wide, 8 high
    if top is None:  # as stored: 32x16 squeezed to 16x8, black left, white right
        assert torch.all(out[:, :6] < 10) and torch.all(out[:, 10:] > 245)
    else:  # 6: turned 90 degrees clockwise (left half now on top); 8: counter-clockwise (left half below)
        assert torch.all((out[:3] - top).abs() < 10) and torch.all((out[5:] - bottom).abs() < 10), out


# ---------------------------------------------------------------- classes and labels
def test_one_class_is_an_error(tiny_vit, tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", {"train": {"dark": 4}, "test": {"dark": 2}})
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, root, tmp_path / "out"))
    assert_one_error_line(
        rc,
        err,
        f"peftlab: error: dataset '{root}' has 1 class; a classifier needs at least 2 "
        "(only 'dark'); lay the folder out as one subfolder per class",
    )


def test_class_without_training_images_is_an_error(tiny_vit, tmp_path, capsys):
    """An empty train/mid would give a 3-way head trained on 2 classes: every 'mid' test image wrong."""
    root = write_image_folder(tmp_path / "data", {"train": {"dark": 4, "light": 4}, "test": {c: 2 for c in CLASSES}})
    (root / "train" / "mid").mkdir()
    (root / "train" / "mid" / "notes.txt").write_text("no images here")
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, root, tmp_path / "out"))
    assert_one_error_line(
        rc,
        err,
        f"peftlab: error: class 'mid' has no training examples (folder "
        f"'{root}/train/mid' has no image files); a class without training examples "
        "cannot be learned: add images, or remove the folder",
    )
    (root / "train" / "mid" / "notes.txt").unlink()
    (root / "train" / "mid").rmdir()  # now 'mid' is only in test/
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, root, tmp_path / "out"))
    assert_one_error_line(
        rc,
        err,
        f"peftlab: error: class folder '{root}/test/mid' has images but "
        f"'{root}/train/mid' does not exist; a class without training images cannot be "
        "learned: add training images or remove the class",
    )
    assert not list(tmp_path.rglob("result.json"))


def save_hf(root: Path, train_labels: list[int | None], test_labels: list[int | None]) -> Path:
    """A save_to_disk DatasetDict with a 3-name ClassLabel, whatever the labels (cast does not check them)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
    from PIL import Image as PILImage

    img = PILImage.new("RGB", (8, 8), (90, 90, 90))

    def split(labels):
        ds = Dataset.from_dict(
            {"img": [img] * len(labels), "label": labels}, features=Features({"img": Image(), "label": Value("int64")})
        )
        return ds.cast(Features({"img": Image(), "label": ClassLabel(names=CLASSES)}))

    DatasetDict({"train": split(train_labels), "test": split(test_labels)}).save_to_disk(str(root))
    return root


def test_labels_outside_the_class_list_are_an_error(tiny_vit, tmp_path, capsys):
    ds = save_hf(tmp_path / "ds", [0, 1, 2, 5, 0, 1, 2, 7], [0, 1, 2])
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, ds, tmp_path / "out"))
    assert_one_error_line(
        rc,
        err,
        "peftlab: error: train split has 2 label(s) outside the 3 classes (values 5, 7; "
        "valid are 0..2, or -1 for 'no label'); fix the label column or its ClassLabel "
        "names",
    )


def test_unlabelled_rows(tiny_vit, tmp_path, capsys):
    """-1 is datasets' 'no label' (hidden test labels): dropped from train, and an all -1 test split is
    replaced by a held-out part of train unless the user asked for that split by name."""
    ds = save_hf(tmp_path / "ds", [0, 1, 2] * 4 + [-1, -1], [-1] * 6)
    warnings: list[str] = []
    task = load_task(str(ds), RGB16, min_per_class=1, warn=warnings.append)
    assert warnings[:2] == [
        "WARNING the test split has no labels (all -1): not used as the test split",
        "WARNING skipped rows without a label (-1): train 2",
    ]
    # every row holds the same picture: the content check says so (it does not stop the run)
    assert all("pixel-identical" in w for w in warnings[2:]) and len(warnings) == 5
    assert task.test.name == "train (held out 20%)" and len(task.train) + len(task.val) + len(task.test) == 12
    assert task.skipped["train"]["unlabelled"] == 2 and (task.train.labels >= 0).all()
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, ds, tmp_path / "out", "--test-split", "test"))
    assert_one_error_line(
        rc,
        err,
        "peftlab: error: test split has no labels (all 6 are -1, which datasets uses for "
        "'no label', e.g. in hidden test splits); pass --test-split with a labelled split",
    )


# ---------------------------------------------------------------- what does not exist, sizes
def test_missing_model(tiny_vit, image_folder, tmp_path, capsys, offline):
    cases = {
        "nonexistent-user/nonexistent-model": "peftlab: error: model 'nonexistent-user/nonexistent-model' is not a "
        "local folder, and HF_HUB_OFFLINE is set and it is not in the Hugging Face cache; pass a local model folder "
        f"or '{BUNDLED_NAME}', or unset HF_HUB_OFFLINE to download it",
        str(tmp_path / "no-model"): f"peftlab: error: model folder '{tmp_path / 'no-model'}' does not exist; pass a "
        f"local model folder, a hub id or '{BUNDLED_NAME}'",
        str(tmp_path): f"peftlab: error: cannot load model '{tmp_path}': ",  # a folder, but not a model's
    }
    for model, message in cases.items():
        rc, _, err = run_cli(capsys, *run_args(Path(model), image_folder, tmp_path / "out"))
        assert_one_error_line(rc, err, message)


def test_missing_dataset(tiny_vit, tmp_path, capsys, offline):
    cases = {
        str(tmp_path / "no-data"): f"peftlab: error: dataset '{tmp_path / 'no-data'}' does not exist; pass an image "
        "folder, a save_to_disk folder, a hub dataset id or one of: fashion-mnist:3,4,6,7,9, "
        "fashion-mnist:0,1,2,5,8, fashion-mnist:0-4, fashion-mnist:5-9, "
        "fashion-mnist:all",
        "nonexistent-user/nonexistent-data": "peftlab: error: cannot load dataset 'nonexistent-user/nonexistent-data': "
        "it is not a local folder, and HF_HUB_OFFLINE is set and it is not in the datasets cache; pass an image "
        "folder, a save_to_disk folder or one of: fashion-mnist:3,4,6,7,9, fashion-mnist:0,1,2,5,8, fashion-mnist:0-4, "
        "fashion-mnist:5-9, fashion-mnist:all, or "
        "unset HF_HUB_OFFLINE to download it",
    }
    for dataset, message in cases.items():
        rc, _, err = run_cli(capsys, *run_args(tiny_vit, dataset, tmp_path / "out"))
        assert_one_error_line(rc, err, message)


def test_train_size_larger_than_the_data(tiny_vit, image_folder, tmp_path, capsys):
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, image_folder, tmp_path / "out", "--train-size", "100"))
    assert_one_error_line(
        rc,
        err,
        "peftlab: error: asked for 100 training images in 'train' but there are only 19; lower --train-size or "
        "pass 0 for all",
    )
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, image_folder, tmp_path / "out", "--test-size", "13"))
    assert_one_error_line(
        rc,
        err,
        "peftlab: error: asked for 13 test images in 'test' but there are only 12; lower --test-size or pass 0 for all",
    )
