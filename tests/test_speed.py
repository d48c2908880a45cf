"""The fast paths give the same results as the plain ones: frozen-prefix caching, batched augmentation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peftlab import cli
from peftlab.training import augment_batch

from .conftest import read_json, save_tiny_vit
from .helpers import load_task, run_args


def _run(model, dataset, out, *extra) -> None:
    assert cli.main(run_args(model, dataset, out, *extra)) == 0


@pytest.mark.parametrize("method, blocks", [("head", 2), ("last", 1)])
def test_prefix_cache_gives_the_uncached_results(tiny_vit, image_folder, tmp_path, method, blocks):
    _run(tiny_vit, image_folder, tmp_path / "cached", "--methods", method)
    _run(tiny_vit, image_folder, tmp_path / "plain", "--methods", method, "--no-prefix-cache")
    a = read_json(tmp_path / "cached" / f"{method}-seed0" / "result.json")
    b = read_json(tmp_path / "plain" / f"{method}-seed0" / "result.json")
    assert a["train"]["path"].startswith("cached prefix") and a["train"]["prefix_blocks"] == blocks
    assert b["train"]["path"] == "full"
    assert a["metrics"]["test"]["accuracy"] == b["metrics"]["test"]["accuracy"]
    assert a["metrics"]["val"]["start_accuracy"] == b["metrics"]["val"]["start_accuracy"]
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-4)


def test_prefix_cache_under_bf16_autocast(tiny_vit, image_folder, tmp_path):
    """With mixed precision the prepared model autocasts its own forward: the cache's self-check must
    compare like with like, or the cache silently never runs on a GPU."""
    _run(tiny_vit, image_folder, tmp_path / "cached", "--methods", "head,last", "--precision", "bf16")
    _run(
        tiny_vit, image_folder, tmp_path / "plain", "--methods", "head,last", "--precision", "bf16", "--no-prefix-cache"
    )
    for m in ("head", "last"):
        a = read_json(tmp_path / "cached" / f"{m}-seed0" / "result.json")
        b = read_json(tmp_path / "plain" / f"{m}-seed0" / "result.json")
        assert a["train"]["precision"] == "bf16" and a["train"]["path"].startswith("cached prefix")
        for ha, hb in zip(a["history"], b["history"]):
            assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=2e-2)


def test_training_on_memory_mapped_images_gives_the_same_results(tiny_vit, image_folder, tmp_path, monkeypatch):
    from peftlab.data import storage

    _run(tiny_vit, image_folder, tmp_path / "ram", "--methods", "lora")
    monkeypatch.setattr(storage, "IN_MEMORY_LIMIT", 0)
    monkeypatch.setenv("PEFTLAB_CACHE_DIR", str(tmp_path / "cache"))
    _run(tiny_vit, image_folder, tmp_path / "mapped", "--methods", "lora")
    a = read_json(tmp_path / "ram" / "lora-seed0" / "result.json")
    b = read_json(tmp_path / "mapped" / "lora-seed0" / "result.json")
    assert (a["data"]["storage"], b["data"]["storage"]) == ("memory", "memory-mapped file")
    assert a["history"] == [h | {"seconds": g["seconds"]} for h, g in zip(b["history"], a["history"])]


def test_last_block_on_the_cls_row_equals_the_whole_block(tiny_vit):
    from peftlab.models import describe, load_model
    from peftlab.training.fastpaths import _cls_row_forward

    model = load_model(str(tiny_vit), ["a", "b", "c"], seed=0).eval()
    arch = describe(model)
    block = model.get_submodule(arch.blocks[-1])
    row = _cls_row_forward(block, arch)
    h = torch.randn(4, 5, 32)
    whole = block(h)
    whole = whole[0] if isinstance(whole, tuple) else whole
    assert row is not None and torch.allclose(row(h), whole[:, :1], atol=1e-5)
    block.dropout.p = 0.5  # in training, the row's dropout is drawn as the whole block's is
    block.train()
    torch.manual_seed(0)
    kept = (row(h) - row(h)).abs().gt(0).float().mean()
    assert kept > 0  # random: two draws differ
    assert _cls_row_forward(nn.Linear(2, 2), arch) is None  # not a ViT block


def test_no_cache_when_the_prefix_is_random(image_folder, tmp_path):
    """Dropout in the frozen blocks, or augmentation, makes the prefix's output change every epoch."""
    from transformers import ViTConfig

    dropout_vit = save_tiny_vit(tmp_path / "dropout-vit")
    cfg = ViTConfig.from_pretrained(dropout_vit)
    cfg.hidden_dropout_prob = 0.1
    cfg.save_pretrained(dropout_vit)
    _run(dropout_vit, image_folder, tmp_path / "a", "--methods", "head")
    assert read_json(tmp_path / "a" / "head-seed0" / "result.json")["train"]["path"] == "full"


def test_no_cache_with_augmentation_and_none_for_lora(tiny_vit, image_folder, tmp_path):
    _run(tiny_vit, image_folder, tmp_path / "b", "--methods", "head,lora", "--augment", "crop-flip")
    for m in ("head", "lora"):
        r = read_json(tmp_path / "b" / f"{m}-seed0" / "result.json")
        assert r["train"]["path"] == "full" and r["train"]["augment"] == "crop-flip"
    _run(tiny_vit, image_folder, tmp_path / "c", "--methods", "lora")
    assert read_json(tmp_path / "c" / "lora-seed0" / "result.json")["train"]["path"] == "full"


def test_flip_is_an_exact_mirror_and_crops_are_seeded():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 12, 10)
    out = augment_batch(x, "flip", torch.Generator().manual_seed(3))
    flipped = torch.flip(x, dims=[3])
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    mirrored = [torch.allclose(o, f, atol=1e-5) for o, f in zip(out, flipped)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    a = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    b = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    c = augment_batch(x, "crop-flip", torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= x.min() - 1e-6 and a.max() <= x.max() + 1e-6  # bilinear: no new extremes
    assert torch.equal(augment_batch(x, "none", torch.Generator()), x)


def test_flops_and_mfu_are_recorded(tiny_vit, image_folder, tmp_path):
    _run(tiny_vit, image_folder, tmp_path / "f", "--methods", "lora,full", "--no-prefix-cache")
    lora = read_json(tmp_path / "f" / "lora-seed0" / "result.json")["throughput"]
    full = read_json(tmp_path / "f" / "full-seed0" / "result.json")["throughput"]
    assert lora["train_flops_per_image"] > 0 and full["train_flops_per_image"] > 0
    # LoRA skips the weight gradients of the frozen Linears: fewer FLOPs per image than full training
    assert lora["train_flops_per_image"] < full["train_flops_per_image"]
    assert full["achieved_tflops"] == pytest.approx(full["train_flops_per_image"] * full["train_img_s"] / 1e12)
    assert full["mfu"] is None  # no peak is known for a CPU


def test_images_decode_once_per_process(image_folder, monkeypatch):
    """A second load of the same images at the same input size (another seed, another grid point) decodes
    nothing: the decoded tensors are reused, identical."""
    from peftlab.data import DecodeCache, decoding
    from peftlab.models import ImageSpec

    cache = DecodeCache(1 << 30)  # what a Worker owns for its runs
    calls = []
    real = decoding._decode_item
    monkeypatch.setattr(decoding, "_decode_item", lambda raw, i, spec: calls.append(i) or real(raw, i, spec))
    spec = ImageSpec(16, 16, 3, (0.5,) * 3, (0.25,) * 3)
    first = load_task(str(image_folder), spec, cache=cache, min_per_class=1, warn=lambda s: None)
    n = len(first.train) + len(first.val) + len(first.test)
    assert len(calls) == n
    again = load_task(str(image_folder), spec, seed=1, cache=cache, min_per_class=1, warn=lambda s: None)
    assert len(calls) == n and cache.hits == n  # all from the cache
    assert torch.equal(first.test.images, again.test.images) or len(first.test) != len(again.test)
    every = lambda t: sorted(  # noqa: E731 - every image of the folder, whichever split a seed puts it in
        bytes(img) for s in (t.train, t.val, t.test) for img in s.images.flatten(1).numpy()
    )
    assert every(first) == every(again)
    other = ImageSpec(8, 8, 1, (0.5,), (0.25,))  # another input size: decoded anew
    load_task(str(image_folder), other, cache=cache, min_per_class=1, warn=lambda s: None)
    assert len(calls) == 2 * n


def test_methods_that_add_tokens_train_the_same_with_the_fast_paths(tiny_vit, image_folder, tmp_path):
    """VPT adds prompt tokens: no frozen prefix is cached for it (its capabilities say so), and the
    [CLS]-row last block (kept: [CLS] stays first) trains exactly as the plain forward does."""
    _run(tiny_vit, image_folder, tmp_path / "fast", "--methods", "vpt-shallow,vpt-deep")
    _run(tiny_vit, image_folder, tmp_path / "plain", "--methods", "vpt-shallow,vpt-deep", "--no-prefix-cache")
    for m in ("vpt-shallow", "vpt-deep"):
        a = read_json(tmp_path / "fast" / f"{m}-seed0" / "result.json")
        b = read_json(tmp_path / "plain" / f"{m}-seed0" / "result.json")
        assert a["train"]["path"] == b["train"]["path"] == "full"
        assert a["train"]["last_block_cls_only"] and not b["train"]["last_block_cls_only"]
        assert a["metrics"]["test"]["accuracy"] == b["metrics"]["test"]["accuracy"]
        for ha, hb in zip(a["history"], b["history"]):
            assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
            assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-4)


def test_inference_cost_is_recorded_for_the_deployed_model(tiny_vit, image_folder, tmp_path):
    """Merged methods cost what the base model costs; VPT's tokens and the adapters' layers cost more."""
    from peftlab.models import load_model

    from .conftest import CLASSES

    names = ("head", "lora", "repadapter", "vpt-deep", "adapter")
    _run(tiny_vit, image_folder, tmp_path / "i", "--methods", ",".join(names))
    inf = {m: read_json(tmp_path / "i" / f"{m}-seed0" / "result.json")["inference"] for m in names}
    base = inf["head"]["base"]
    assert base["params"] == sum(p.numel() for p in load_model(str(tiny_vit), CLASSES).parameters())
    assert all(i["base"]["flops_per_image"] == base["flops_per_image"] for i in inf.values())
    for m in ("head", "lora", "repadapter"):  # merged: the base model's architecture
        assert inf[m]["deployed"] == "merged"
        assert (inf[m]["params"], inf[m]["flops_per_image"]) == (base["params"], base["flops_per_image"])
    for m in ("vpt-deep", "adapter"):  # unmerged: what the method adds stays
        assert inf[m]["deployed"] == "unmerged" and inf[m]["flops_per_image"] > base["flops_per_image"]
    assert inf["vpt-deep"]["params"] == base["params"] + 2 * 5 * 32  # L·P·d prompts
    assert inf["adapter"]["params"] == base["params"] + 2 * 2 * (2 * 32 * 8 + 8 + 32)  # L·2 adapters of width 8
    assert all(i["img_s"] > 0 and i["base"]["img_s"] > 0 and i["batch"] == 12 for i in inf.values())


def test_a_search_reuses_its_prefix_features_and_gets_a_fresh_runs_results(tiny_vit, image_folder, tmp_path):
    """The trials of a search and the final run of its seed run the frozen prefix once; what they train on is
    exactly what a run of its own computes."""
    from peftlab.training.prefixmemo import prefix_memo

    _run(tiny_vit, image_folder, tmp_path / "tuned", "--methods", "head", "--tune", "lr", "--tune-trials", "2")
    a = read_json(tmp_path / "tuned" / "head-seed0" / "result.json")
    assert a["train"]["prefix_cache_reused"] is True
    prefix_memo.clear()
    _run(tiny_vit, image_folder, tmp_path / "fresh", "--methods", "head", "--lr", repr(a["method_config"]["lr"]))
    b = read_json(tmp_path / "fresh" / "head-seed0" / "result.json")
    assert "prefix_cache_reused" not in b["train"]
    assert [h | {"seconds": 0} for h in a["history"]] == [h | {"seconds": 0} for h in b["history"]]
    assert a["metrics"]["test"] == b["metrics"]["test"]


def test_prefix_features_are_not_reused_for_other_weights_or_images(tiny_vit, monkeypatch):
    from types import SimpleNamespace

    from peftlab.models import load_model
    from peftlab.training import prefixmemo
    from peftlab.training.fastpaths import PrefixCache
    from peftlab.training.prefixmemo import PrefixMemo

    model = load_model(str(tiny_vit), ["a", "b"], seed=0)
    cache = PrefixCache(model, 1)
    split = lambda n: SimpleNamespace(images=torch.zeros(n, 3, 8, 8))  # noqa: E731
    task = SimpleNamespace(train=split(4), val=split(2), test=split(2))
    memo, feats = PrefixMemo(), {"train": torch.ones(4, 2)}
    memo.put(task, cache, ("key",), feats)
    assert memo.get(task, cache, ("key",)) is feats
    assert memo.get(task, cache, ("other",)) is None
    assert memo.get(SimpleNamespace(train=split(4), val=task.val, test=task.test), cache, ("key",)) is None
    with torch.no_grad():
        next(cache.prefix[0].parameters())[0] += 1e-6  # a prefix weight changed: not the same features
    assert memo.get(task, cache, ("key",)) is None
    del task  # the images go, and their entry with them
    assert memo.entries == {}
    task = SimpleNamespace(train=split(4), val=split(2), test=split(2))
    memo.put(task, cache, ("key",), feats)
    kept = memo.bytes()
    assert kept > 0
    monkeypatch.setattr(prefixmemo, "budget", lambda device: kept)  # room for one entry: the older one goes
    other = SimpleNamespace(train=split(4), val=split(2), test=split(2))
    memo.put(other, cache, ("key",), feats)
    assert memo.get(task, cache, ("key",)) is None and memo.get(other, cache, ("key",)) is feats
    assert memo.bytes() == kept
