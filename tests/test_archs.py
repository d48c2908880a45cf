"""Every Hugging Face image-classifier family peftlab describes, on tiny random-init models with their own PIL
image processors (tests/archs.py, built offline): the images it feeds are the processor's, its blocks are
the model's in forward order, every registered method takes a step with its counts checked or says why it
cannot apply, the README's matrix is this one, per-stage formulas equal the measured counts, and BatchNorm
statistics are frozen unless trained and saved when trained."""

from __future__ import annotations

import copy
import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftlab import cli, models, theory
from peftlab import methods as M
from peftlab.data.decoding import _pil_to_array
from peftlab.errors import Unsupported
from peftlab.training.measure import count_params

from . import archs
from .conftest import CLASSES, read_json, write_image_folder
from .helpers import run_args, run_cli

README = Path(__file__).resolve().parent.parent / "README.md"
FAMILY_OF = {"deit-distilled": "deit"}  # archs' name -> its entry in models/families.py
# methods every family takes: the head, blocks, biases, PEFT's LoRA family (Linear or Conv2d), full
EVERYWHERE = {"head", "last", "freeze-first", "bitfit", "lora", "rslora", "dora", "adalora", "loha", "lokr", "full"}


@pytest.mark.parametrize("method", list(M.REGISTRY))
@pytest.mark.parametrize("family", archs.FAMILIES)
def test_every_method_on_every_family_takes_a_step_or_says_why_not(family, method):
    """As `peftlab run` does: counts before, method applied, measured counts equal them (cell asserts it),
    one optimizer step with a gradient; or Unsupported with its reason, which the run records."""
    c = archs.cell(family, method)
    assert c.ok or re.fullmatch(r"unsupported: \S.{10,}", c.text), c.text
    if method in EVERYWHERE:
        assert c.ok, c.text


def test_the_readme_shows_this_matrix():
    """The README's "Architectures × methods" table is the generated one (`python -m tests.archs` prints it)."""
    text = README.read_text()
    found = re.search(r"<!-- matrix: python -m tests\.archs -->\n(.*?)<!-- end of matrix -->", text, re.S)
    assert found, "README.md has no generated matrix section"
    assert found.group(1) == archs.matrix()


@pytest.mark.parametrize("family", archs.FAMILIES)
def test_blocks_are_the_models_in_forward_order_and_every_head_is_replaced(family):
    model, _ = archs._base(family)
    arch = models.describe(model)
    assert arch.family == FAMILY_OF.get(family, family)
    fam = models.FAMILIES[arch.family]
    typed = [n for n, m in model.named_modules() if type(m).__name__ in fam.block_types]
    assert list(arch.blocks) == typed and len(typed) >= 2
    called: list[str] = []
    hooks = [model.get_submodule(b).register_forward_pre_hook(lambda m, a, b=b: called.append(b)) for b in arch.blocks]
    try:
        with torch.no_grad():
            model(pixel_values=archs._base(family)[1])
    finally:
        for h in hooks:
            h.remove()
    assert called == list(arch.blocks)
    stages = [
        int(m.group("stage")) if "stage" in m.re.groupindex else 0 for m in map(re.compile(fam.blocks).fullmatch, typed)
    ]
    assert list(arch.stages) == sorted(stages) == stages
    for path in arch.head_linears:  # every head maps to the new labels
        assert model.get_submodule(path).out_features == len(archs.LABELS)


@pytest.mark.parametrize("family", archs.FAMILIES)
def test_every_parameter_has_the_depth_layer_wise_decay_reads(family):
    """Arch.depth_of on every family: a block's parameters at its place in forward order (1..n), the heads and
    what follows the last block at n + 1, the stem at 0, what runs between stages at the block it follows."""
    model, _ = archs._base(family)
    arch = models.describe(model)
    n = arch.num_blocks
    under = lambda name, path: name == path or name.startswith(path + ".")  # noqa: E731
    seen = set()
    for name, _ in model.named_parameters():
        depth = arch.depth_of(name)
        block = next((i for i, b in enumerate(arch.blocks) if under(name, b)), None)
        if block is not None:
            assert depth == block + 1, name
        elif any(under(name, h) for h in arch.heads):
            assert depth == n + 1, name
        else:
            assert 0 <= depth <= n + 1, name
        seen.add(depth)
    assert {0, 1, n, n + 1} <= seen, sorted(seen)


PROCESSOR_FAMILIES = list({type(archs.processor(f)).__name__: f for f in reversed(archs.FAMILIES)}.values())


@pytest.mark.parametrize("family", PROCESSOR_FAMILIES, ids=lambda f: type(archs.processor(f)).__name__)
def test_peftlab_feeds_the_model_what_its_processor_would(family):
    """For every processor class: the tensors peftlab trains and predicts on equal the processor's own
    output on the same pictures (assorted shapes), up to float rounding."""
    path = archs.folder(family)
    proc = transformers.AutoImageProcessor.from_pretrained(path)
    assert type(proc).__name__ == type(archs.processor(family)).__name__
    spec = models.image_spec(path, transformers.AutoConfig.from_pretrained(path))
    assert not spec.fallback or spec.fallback.startswith("the image processor keeps")
    pics = archs.pictures(4, seed=3)
    want = proc(images=pics, return_tensors="pt")["pixel_values"]
    got = spec.normalize(torch.from_numpy(np.stack([_pil_to_array(p, spec) for p in pics])))
    assert got.shape == want.shape == (4, 3, archs.side(family), archs.side(family))
    # the uint8 pixels are the processor's exactly (same integer sizes, crop, PIL filter); what differs is the
    # float arithmetic of the rescale and normalisation, far below one uint8 step (rescale / std ≈ 0.02)
    assert float((got - want).abs().max()) < 1e-5


# ---------------------------------------------------------------- per stage: derived = measured
STAGE_PATHS = {"swin": r"swin\.encoder\.layers\.(\d+)\.", "convnext": r"convnext\.encoder\.stages\.(\d+)\."}


def stage_table(family: str, method: str, cfg) -> list[tuple[int, int, int]]:
    """(stage, derived trainable, measured trainable) for each stage of the family's hub-shaped (deep) model,
    the head's row as stage 0; derived from theory's per-stage lines, measured from parameter names."""
    model = archs.build(family, "deep")
    models.fit_head(model, archs.LABELS, 0)
    base = sum(p.numel() for p in model.parameters())
    bd = theory.derive(model.config, M.get(method), cfg, len(archs.LABELS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = M.get(method).apply(model, models.describe(model), cfg, 10).model
    result = theory.check(bd, count_params(pm, base))
    assert result["theory_match"], (result, bd.format())
    derived, measured = {}, {}
    for ln in bd.lines:
        if ln.trainable and ln.part != "subset":
            s = re.search(r"stage (\d+)", ln.component)
            derived[int(s.group(1)) if s else 0] = derived.get(int(s.group(1)) if s else 0, 0) + ln.count
    for n, p in pm.named_parameters():
        if p.requires_grad:
            s = re.search(STAGE_PATHS[family], n)
            k = int(s.group(1)) + 1 if s else 0
            measured[k] = measured.get(k, 0) + p.numel()
    return [(s, derived.get(s, 0), measured.get(s, 0)) for s in sorted(set(derived) | set(measured))]


@pytest.mark.parametrize("family", ["swin", "convnext"])
@pytest.mark.parametrize(
    "method,cfg",
    [("last", M.LastConfig(blocks=2)), ("last", M.LastConfig(blocks=1, unit="stages")), ("lora", M.LoraConfig())],
    ids=["last2", "last-stage", "lora"],
)
def test_per_stage_counts_of_hub_shaped_models(family, method, cfg):
    """Swin-T (depths 2,2,6,2) and ConvNeXt-T (3,3,9,3) shapes: each stage's trainable count as derived is
    what the model has; `last 2` trains only the last stage's blocks (and, in Swin, the patch merging
    that feeds them), `last` with unit=stages the last stage whole; LoRA reaches every stage."""
    rows = stage_table(family, method, cfg)
    assert all(d == m for _, d, m in rows), rows
    trained = [s for s, d, _ in rows if d and s]
    assert trained == ([3, 4] if family == "swin" and method == "last" else [4] if method == "last" else [1, 2, 3, 4])
    if family == "swin" and method == "lora":  # q, v of all 12 blocks: r·(d+d) each, d = 8, 16, 32, 64
        assert [d for s, d, _ in rows if s] == [2 * 2 * 8 * 16, 2 * 2 * 8 * 32, 6 * 2 * 8 * 64, 2 * 2 * 8 * 128]
    if family == "convnext" and method == "last":  # blocks 2-3 of stage 4, or all 3 and its downsampling
        block, down = 8 * 16**2 + 58 * 16, 2 * 16 + 4 * 16 * 16 + 16
        assert rows[-1][1] == (2 * block if cfg.unit == "blocks" else 3 * block + down)


def test_a_block_the_description_misses_is_a_mismatch():
    """The structural count finds blocks by class, not through the Arch the method is applied with: a method
    applied with a wrong Arch (Swin's last stage missing, as the longest-ModuleList search found it) does
    not get a ✓."""
    model, _ = archs._base("swin")
    model = copy.deepcopy(model).requires_grad_(True)
    base = sum(p.numel() for p in model.parameters())
    arch = models.describe(model)
    first = arch.stage_blocks(0)
    wrong = replace(arch, blocks=tuple(arch.blocks[i] for i in first), stages=(0,) * len(first))
    bd = theory.counts(model, M.get("last"), M.LastConfig(), len(archs.LABELS))
    pm = M.get("last").apply(model, wrong, M.LastConfig(), 10).model
    result = theory.check(bd, count_params(pm, base))
    assert not result["theory_match"] and result["mismatches"][0]["what"] == "trainable"


def test_theory_command_on_families_with_formulas(capsys):
    rc, out, _ = run_cli(
        capsys, "theory", "--model", archs.folder("convnext"), "--method", "last", "--last-blocks", "2"
    )
    assert rc == 0 and "stage 2 blocks" in out and "ConvNextForImageClassification" in out
    rc, _, err = run_cli(capsys, "theory", "--model", archs.folder("regnet"), "--method", "head")
    assert rc != 0 and "no formulas for model type 'regnet'; 'peftlab run' counts such models structurally" in err


# ---------------------------------------------------------------- formulas on random configs
@st.composite
def resnet_configs(draw):
    depths = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    return transformers.ResNetConfig(
        embedding_size=draw(st.sampled_from([4, 8])),
        hidden_sizes=[4 * draw(st.integers(1, 6)) for _ in depths],
        depths=depths,
        layer_type=draw(st.sampled_from(["basic", "bottleneck"])),
        downsample_in_first_stage=draw(st.booleans()),
    )


@st.composite
def stack_configs(draw):
    heads = draw(st.integers(1, 3))
    kw = dict(
        hidden_size=heads * draw(st.integers(2, 8)),
        num_attention_heads=heads,
        num_hidden_layers=draw(st.integers(1, 3)),
        patch_size=draw(st.sampled_from([4, 8])),
    )
    kw["image_size"] = kw["patch_size"] * draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["dinov2", "beit", "data2vec-vision"]))
    if kind == "dinov2":
        return transformers.Dinov2Config(mlp_ratio=draw(st.integers(1, 4)), use_swiglu_ffn=draw(st.booleans()), **kw)
    cls = transformers.BeitConfig if kind == "beit" else transformers.Data2VecVisionConfig
    return cls(
        intermediate_size=draw(st.integers(4, 32)),
        use_relative_position_bias=draw(st.booleans()),
        use_mean_pooling=draw(st.booleans()),
        layer_scale_init_value=draw(st.sampled_from([0.0, 0.1])),
        **kw,
    )


FORMULA_METHODS = ["head", "last", "freeze-first", "bitfit", "lora", "dora", "loha", "ia3", "full"]


def _options(draw, method: str, blocks: int):
    if method == "last":
        return M.LastConfig(blocks=draw(st.integers(1, blocks)), final_norm=draw(st.booleans()))
    if method in ("lora", "dora"):
        return M.get(method).config_cls(r=draw(st.integers(1, 4)))
    return M.get(method).config_cls()


@pytest.mark.parametrize("kind", ["resnet", "stack"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_family_formulas_equal_measured_on_random_configs(kind, data):
    """As for ViT (test_theory): random small ResNets (basic or bottleneck, 1-4 stages) and DINOv2 / BEiT /
    Data2VecVision stacks, a method with random options: derived counts = the built model's."""
    config = data.draw(resnet_configs() if kind == "resnet" else stack_configs())
    config.num_labels = data.draw(st.integers(2, 9))
    method = data.draw(st.sampled_from(FORMULA_METHODS))
    model = transformers.AutoModelForImageClassification.from_config(config)
    swiglu = getattr(config, "use_swiglu_ffn", False)  # no formulas for DINOv2's SwiGLU MLP: counted structurally
    assert theory.supported(config, model) != swiglu
    models.fit_head(model, [f"c{i}" for i in range(config.num_labels)], 0)
    arch = models.describe(model)
    cfg = _options(data.draw, method, arch.num_blocks)
    base = sum(p.numel() for p in model.parameters())
    try:
        bd = theory.counts(model, M.get(method), cfg, config.num_labels)
    except Unsupported:
        return  # e.g. ia3 on a ResNet's convs without a feed-forward role: the matrix covers these
    assert bd.kind == ("structural" if swiglu else "theory")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = M.get(method).apply(model, arch, cfg, 10).model
    result = theory.check(bd, count_params(pm, base))
    assert not result["mismatches"], (result["mismatches"], bd.format())


# ---------------------------------------------------------------- runs: BatchNorm, unsupported, exit status
@pytest.fixture(scope="module")
def cnn_runs(tmp_path_factory):
    """MobileNetV2 (BatchNorm everywhere, lively weights so that statistics matter): head and last trained,
    vpt-shallow asked for too (it cannot apply to a CNN)."""
    root = tmp_path_factory.mktemp("cnn")
    model = archs.save("mobilenet_v2", root / "model", lively=True)
    data = write_image_folder(root / "data", {"train": {c: 6 for c in CLASSES}, "test": {c: 4 for c in CLASSES}})
    out = root / "runs"
    rc = cli.main(run_args(model, data, out, "--methods", "head,last,vpt-shallow", "--last-lr", "0.01", epochs=2))
    return rc, model, data, out


def test_unsupported_is_reported_and_the_others_run(cnn_runs):
    rc, _, _, out = cnn_runs
    assert rc == 0
    status = {p.parent.name.split("-seed")[0]: read_json(p)["status"] for p in out.glob("*/result.json")}
    assert status == {"head": "ok", "last": "ok", "vpt-shallow": "unsupported"}
    vpt = read_json(next(out.glob("vpt-shallow*/result.json")))
    assert "head reads a global average pool" in vpt["error"]
    summary = (out / "summary.md").read_text()
    assert re.search(r"vpt-shallow.*unsupported: vpt-shallow puts prompt tokens", summary)


@pytest.mark.parametrize("method", ["head", "last"])
def test_eval_of_a_saved_batchnorm_run_reproduces_its_accuracy(cnn_runs, method, capsys):
    """A frozen BatchNorm keeps its statistics (head), a trained one saves them (last): `peftlab eval` on the
    saved run scores what the run reported."""
    _, model, data, out = cnn_runs
    run = next(out.glob(f"{method}-seed*"))
    rc, text, _ = run_cli(capsys, "eval", str(run), "--dataset", str(data), "--json")
    assert rc == 0
    result = read_json(run / "result.json")
    assert json.loads(text)["accuracy"] == pytest.approx(result["metrics"]["test"]["accuracy"])
    from safetensors.torch import load_file

    base = archs.build("mobilenet_v2", lively=True)
    stats = {n: t for f in run.rglob("*.safetensors") for n, t in load_file(f).items() if n.endswith("running_mean")}
    if method == "head":  # nothing of the backbone trained: its statistics are the pretrained ones, not saved
        assert not stats
    else:  # the last block's BatchNorms trained: their changed statistics were saved, and only theirs
        last = models.describe(base).blocks[-1] + "."
        assert stats and all(n.startswith(last) for n in stats), list(stats)
        assert all(not torch.equal(t, base.get_buffer(n)) for n, t in stats.items())


def test_exit_status_is_1_when_no_run_succeeded(cnn_runs, tmp_path, capsys):
    _, model, data, _ = cnn_runs
    rc, _, err = run_cli(
        capsys, *run_args(model, data, tmp_path / "out", "--methods", "vpt-shallow,vpt-deep", epochs=1)
    )
    assert rc == 1 and "no run succeeded (2 runs: unsupported)" in err


@pytest.mark.parametrize("method", ["head", "last", "bitfit"])
def test_frozen_batchnorms_keep_their_statistics_in_training(method):
    """In train mode only the BatchNorms with a trainable weight or bias update their running statistics (none
    for head, the last block's for last, every one for bitfit), and those are what a run saves besides."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from peftlab.training.modes import train_mode, trained_norm_buffers

    model = archs.build("resnet", lively=True)
    models.fit_head(model, archs.LABELS, 0)
    pm = M.get(method).apply(model, models.describe(model), M.get(method).config_cls(), 10).model
    bns = {n: m for n, m in pm.named_modules() if isinstance(m, _BatchNorm)}
    trained = {n for n, m in bns.items() if any(p.requires_grad for p in m.parameters(recurse=False))}
    before = {n: m.running_mean.clone() for n, m in bns.items()}
    train_mode(pm)
    with torch.no_grad():
        pm(pixel_values=torch.randn(4, 3, 32, 32))
    changed = {n for n, m in bns.items() if not torch.equal(m.running_mean, before[n])}
    assert changed == trained
    assert (
        len(trained) == {"head": 0, "last": 3, "bitfit": len(bns)}[method]
    )  # the last bottleneck: 3 convs, no shortcut
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert set(trained_norm_buffers(pm)) == {f"{n}.{b}" for n in trained for b in buffers}
