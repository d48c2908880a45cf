"""Parameter counts derived from a model's config: a per-component table of formulas, checked
against what training.measure.count_params finds in the model actually built.

    bd = derive(load_config("vit-base-patch16-224"), methods.get("lora"), LoraConfig(r=8), num_labels=101)
    print(bd.format())      # LoRA on query,value: L·2·r·(d+d) = 12·2·8·(768+768) = 294,912 ...
    check(bd, count_params(prepared.model, base_total))  # {"theory_match": True, ...}

The definitions are count_params's:
  base            = the model with its new C-class head (the pretrained head is gone);
  added           = parameters a method adds beside the base (LoRA's A and B matrices);
  total           = base + added: each module once, PEFT's modules_to_save copy of the head not again;
  peft_all_params = PEFT's own "all params", which counts the head twice (original and copy);
  trainable       = parameters with requires_grad after the method is applied; % is of base.

derive() knows the transformers ViT family (model_type "vit" and "deit") and, per stage, Swin, ConvNeXt
(V1, V2), ResNet, DINOv2, BEiT and Data2VecVision (theory/families.py). For any other classifier,
structural() counts the same table from the built model's module shapes; its result says
kind="structural" and is never called theory; counts() picks for a built model. Each method's formula is
part of its registration (methods.registry); a method without one gets None here and is reported
"not derived".
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..errors import UserError
from .anatomy import Anatomy, Theory
from .families import THEORIES, family_theory
from .lines import Breakdown, Line
from .presets import ALIASES, PRESETS, Preset, load_config, preset_config
from .structural import Structural

__all__ = [
    "ALIASES",
    "NOT_DERIVED",
    "PRESETS",
    "Breakdown",
    "Line",
    "Preset",
    "check",
    "counts",
    "derive",
    "load_config",
    "preset_config",
    "structural",
    "supported",
]

NOT_DERIVED = "not derived"

# ------------------------------------------------------------------------- entry points


def supported(model_config, model: nn.Module | None = None) -> bool:
    """Whether derive() has formulas for this config (else use structural()); with the built model, also
    whether they describe its class (a distilled DeiT's two heads are counted structurally)."""
    try:
        an = _theory(model_config, 1)
    except UserError:
        return False
    classes = getattr(an, "classes", None) or ("DeiTForImageClassification", "ViTForImageClassification")
    return model is None or type(model).__name__ in classes


def _theory(model_config, num_labels: int) -> Anatomy:
    if isinstance(model_config, Mapping):
        model_config = _Attrs(model_config)
    model_type = getattr(model_config, "model_type", None)
    if model_type in THEORIES:
        return family_theory(model_config, num_labels)
    return Theory(model_config, num_labels)


def derive(model_config, method, method_cfg=None, num_labels: int = 2) -> Breakdown | None:
    """Parameter table of a config under a method (a methods.Method: its registered formula); None when the
    method has no formula ("not derived"). method_cfg defaults to the method's default config; model_config
    is a transformers config (a ViT's may be anything with its attributes)."""
    return _build(_theory(model_config, num_labels), method, method_cfg)


def structural(model: nn.Module, method, method_cfg=None, num_labels: int | None = None) -> Breakdown | None:
    """The same table counted from a built (not yet prepared) model's module shapes, for any
    architecture models.describe understands. kind="structural"; num_labels defaults to the head's."""
    return _build(Structural(model, num_labels), method, method_cfg)


def counts(model: nn.Module, method, method_cfg=None, num_labels: int | None = None) -> Breakdown | None:
    """What a method should train on this built model: derived from its config where formulas describe its
    class, else counted structurally."""
    if supported(model.config, model):
        return derive(model.config, method, method_cfg, num_labels or model.config.num_labels)
    return structural(model, method, method_cfg, num_labels)


def _build(an: Anatomy, method, method_cfg) -> Breakdown | None:
    if method.formula is None:
        return None
    cfg = method.config_cls() if method_cfg is None else method_cfg
    if not isinstance(cfg, method.config_cls):
        raise UserError(f"method '{method.name}' takes a {method.config_cls.__name__}, got {type(cfg).__name__}")
    lines = method.formula(an, cfg)
    base = sum(ln.count for ln in lines if ln.part == "base")
    added = sum(ln.count for ln in lines if ln.part == "added")
    copy = sum(ln.count for ln in lines if ln.part == "copy")
    trainable = sum(ln.count for ln in lines if ln.trainable)
    total = base + added
    options = ", ".join(f"{k}={v}" for k, v in cfg.options().items() if k != "lr")
    bd = Breakdown(
        lines,
        total,
        trainable,
        base,
        added,
        total + copy,
        an.kind,
        f"{an.title}; method {method.name}{f' ({options})' if options else ''}",
        an.legend,
    )
    if copy:
        bd.notes.append(
            f'PEFT\'s "all params" {bd.peft_all_params:,} counts the head twice, the frozen '
            f"original and its trainable modules_to_save copy ({copy:,} each); the model's total "
            f"is base + added = {total:,}"
        )
    bd.notes += getattr(an, "notes", [])
    bd.notes.append(
        f"% trainable is on the base model with its new head: {trainable:,} / {base:,} = "
        f"{bd.trainable_pct:.4f} %"
        + (f" (PEFT prints trainable / its all params = {100 * trainable / bd.peft_all_params:.4f} %)" if copy else "")
    )
    return bd


_CHECKED = ("trainable", "total", "base", "added", "peft_all_params")


def check(breakdown: Breakdown | None, measured_params: dict) -> dict:
    """Compare with count_params's dict. Keys are prefixed with the breakdown's kind:
    {"theory_trainable", "theory_total", "theory_match", "mismatches", "kind"} (structural_* for a
    structural breakdown); mismatches lists each figure that differs, with both numbers. Without a
    breakdown (a method with no formula): {"kind": "not derived", "mismatches": []}."""
    if breakdown is None:
        return {"kind": NOT_DERIVED, "mismatches": []}
    k = breakdown.kind
    mismatches = [
        {"what": key, k: getattr(breakdown, key), "measured": measured_params[key]}
        for key in _CHECKED
        if key in measured_params and measured_params[key] != getattr(breakdown, key)
    ]
    return {
        f"{k}_trainable": breakdown.trainable,
        f"{k}_total": breakdown.total,
        f"{k}_match": not mismatches,
        "mismatches": mismatches,
        "kind": k,
    }


class _Attrs:
    def __init__(self, d: Mapping):
        self.__dict__.update(d)


MATRIX_MODEL, MATRIX_CLASSES = "vit-base-patch16-224", 101  # the capability matrix's reference model


def capability_matrix() -> list[list[str]]:
    """One row per method: trainable parameters on ViT-B/16 with 101 classes (derived from the theory),
    whether it merges, what it costs at inference beyond the base, identity at start, PEFT-format save,
    and its paper (authors and year)."""
    from ..methods import REGISTRY

    config = load_config(MATRIX_MODEL)
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    rows = [["method", "trainable (ViT-B/16, 101 classes)", "merges", "extra inference cost", "identity at start"]]
    rows[0] += ["PEFT save", "paper"]
    for name, m in REGISTRY.items():
        bd = derive(config, m, None, MATRIX_CLASSES)
        rows.append(
            [
                name,
                f"{bd.trainable:,}" if bd else NOT_DERIVED,
                yes(m.caps.mergeable),
                m.caps.inference_cost(),
                yes(m.caps.identity_at_init),
                yes(m.caps.peft_format),
                m.paper.split(",")[0] if m.paper else "-",
            ]
        )
    return rows
