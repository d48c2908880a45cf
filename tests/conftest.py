"""Shared fixtures: a tiny random ViT saved like a hub model, and tiny datasets written to disk.

Everything is built locally (nothing is downloaded) and once per session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# The models here are tiny: one thread is as fast, and with other work on the machine several threads
# spin-waiting on each other make each step tens of times slower.
torch.set_num_threads(1)

# three classes told apart by brightness, which survives every image mode (L, RGB, RGBA, P, JPEG)
BRIGHTNESS = {"dark": 40, "mid": 128, "light": 215}
CLASSES = sorted(BRIGHTNESS)  # the order peftlab gives them: sorted folder names
IMAGE_MODES = ["RGB-png", "RGB-jpg", "L-png", "RGBA-png", "P-png"]
TINY_IMAGE = 16  # the tiny model's input side; the images on disk are 20x20 so they get resized
FILE_IMAGE = 20


def make_image(value: int, mode: str, rng: np.random.Generator, size: int = FILE_IMAGE):
    """A noisy image of roughly `value` brightness in the given mode (PIL image, file suffix)."""
    from PIL import Image

    arr = np.clip(value + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
    arr[..., :] = arr.mean(-1, keepdims=True).astype(np.uint8)  # grey: all channels equal
    img = Image.fromarray(arr, "RGB")
    kind, suffix = mode.split("-")
    if kind == "L":
        img = img.convert("L")
    elif kind == "RGBA":
        img = img.convert("RGBA")  # opaque alpha channel
    elif kind == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return img, "." + suffix


def write_image_folder(root: Path, per_split: dict[str, dict[str, int]], seed: int = 0) -> Path:
    """root/<split>/<class>/NNN.<png|jpg> with per_split[split][class] images, cycling through modes."""
    rng = np.random.default_rng(seed)
    k = 0
    for split, counts in per_split.items():
        for cls, n in counts.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img, suffix = make_image(BRIGHTNESS[cls], IMAGE_MODES[k % len(IMAGE_MODES)], rng)
                k += 1
                img.save(d / f"{i:03d}{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))
    return root


def save_tiny_vit(
    folder: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    image: int = TINY_IMAGE,
    patch: int = 8,
    channels: int = 3,
    num_labels: int = 2,
    seed: int = 0,
) -> Path:
    """A random ViT plus its image processor, saved the way a hub model is laid out."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        image_size=image,
        patch_size=patch,
        num_channels=channels,
        num_labels=num_labels,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessorPil(
        size={"height": image, "width": image}, image_mean=[0.5] * channels, image_std=[0.25] * channels
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """Folder of a 2-block, hidden-32, 16x16 RGB ViT with 2 labels (to be re-headed for each task)."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """train/ (8 per class) and test/ (4 per class) of 3 brightness classes, PNG and JPEG, modes L/RGB/RGBA/P."""
    root = tmp_path_factory.mktemp("images")
    return write_image_folder(root, {"train": {c: 8 for c in CLASSES}, "test": {c: 4 for c in CLASSES}})


@pytest.fixture(scope="session")
def hf_dataset_dir(tmp_path_factory) -> Path:
    """A datasets.save_to_disk DatasetDict (train/test) with an Image column 'img' and a ClassLabel 'category'."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    rng = np.random.default_rng(1)
    features = Features({"img": Image(), "category": ClassLabel(names=CLASSES)})

    def split(n_per_class: int) -> Dataset:
        rows = {"img": [], "category": []}
        for i in range(n_per_class):
            for c, cls in enumerate(CLASSES):
                rows["img"].append(make_image(BRIGHTNESS[cls], IMAGE_MODES[(i + c) % 5], rng)[0])
                rows["category"].append(c)
        return Dataset.from_dict(rows, features=features)

    root = tmp_path_factory.mktemp("hf-dataset") / "ds"
    DatasetDict({"train": split(6), "test": split(3)}).save_to_disk(str(root))
    return root


def read_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())
