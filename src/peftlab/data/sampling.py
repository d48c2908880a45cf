"""Seeded, stratified samples of a split's labels, and class coverage of what was sampled."""

from __future__ import annotations

import numpy as np

from ..errors import UserError


# ---------------------------------------------------------------- sampling and coverage
def stratified_indices(labels: np.ndarray, n: int, seed, *, what: str = "", option: str = "--train-size") -> np.ndarray:
    """n indices with each class represented in proportion (largest remainder), seeded (an int or a
    numpy seed sequence such as [seed, stream]), shuffled."""
    if n > len(labels):
        raise UserError(
            f"asked for {n} examples but the split has only {len(labels)}"
            f"{f' {what}' if what else ''}; lower {option} or pass 0 for all"
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take)]
    return rng.permutation(np.concatenate(picked)) if picked else np.array([], dtype=int)


def per_class_indices(labels: np.ndarray, k: int, names: list[str], seed, *, what: str, option: str) -> np.ndarray:
    """k indices of every class (seeded, shuffled): the few-shot sample; a class with fewer is an error."""
    rng = np.random.default_rng(seed)
    picked = []
    for c, name in enumerate(names):
        pool = np.flatnonzero(labels == c)
        if len(pool) < k:
            raise UserError(
                f"class '{name}' has only {len(pool)} {what}, fewer than {option} {k}; lower {option} or add images"
            )
        picked.append(rng.choice(pool, k, replace=False))
    return rng.permutation(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)


def coverage(labels: np.ndarray, names: list[str], min_per_class: int) -> dict:
    counts = np.bincount(labels, minlength=len(names))
    return {
        "examples": int(len(labels)),
        "classes_present": int((counts > 0).sum()),
        "classes_total": len(names),
        "missing": [names[i] for i in np.flatnonzero(counts == 0)],
        "min_per_class": int(counts.min()) if len(counts) else 0,
        "below_min": [names[i] for i in np.flatnonzero((counts > 0) & (counts < min_per_class))],
        "per_class": {n: int(c) for n, c in zip(names, counts)},
    }


def coverage_problems(cov: dict, split: str, min_per_class: int) -> list[str]:
    out = []
    if cov["missing"]:
        shown = ", ".join(cov["missing"][:5]) + (" ..." if len(cov["missing"]) > 5 else "")
        out.append(f"{split} split misses {len(cov['missing'])} of {cov['classes_total']} classes ({shown})")
    if cov["below_min"]:
        out.append(
            f"{split} split has fewer than {min_per_class} examples for "
            f"{len(cov['below_min'])} classes ({', '.join(cov['below_min'][:5])})"
        )
    return out
