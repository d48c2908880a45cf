"""Classical models on fixed inputs, each with its one hyperparameter chosen on the validation split and
the test split scored once: the majority class, logistic regression (on pixels or features) and k-NN."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # inverse L2 strength of the logistic regressions
K_GRID = (1, 3, 5, 7, 11, 15, 21, 31)  # neighbours of k-NN (those below the training size)
MAX_PIXELS = 3072  # raw inputs larger than this are average-pooled down (32x32x3) before the regression


@dataclass(frozen=True)
class Reference:
    name: str  # as in result.json's method
    label: str  # its row in tables
    description: str
    input: str  # "labels", "pixels", "features" (the pretrained model's) or "random-features" (a random copy's)
    option: str  # the hyperparameter chosen on validation ("" for none)
    order: int  # rows before the methods', in this order


REFERENCES = {
    r.name: r
    for r in (
        Reference(
            "majority",
            "majority class (chance)",
            "always predict the training sample's most frequent class",
            "labels",
            "",
            -5,
        ),
        Reference(
            "pixels",
            "logistic regression on pixels",
            "multinomial logistic regression on the raw, standardised pixels (L-BFGS, converged); C chosen on "
            "validation",
            "pixels",
            "C",
            -4,
        ),
        Reference(
            "probe",
            "linear probe (converged)",
            "multinomial logistic regression on the frozen pretrained features (what the head reads; L-BFGS, "
            "converged); C chosen on validation",
            "features",
            "C",
            -3,
        ),
        Reference(
            "knn",
            "k-NN on features",
            "k nearest neighbours (cosine) on the frozen pretrained features; k chosen on validation",
            "features",
            "k",
            -2,
        ),
        Reference(
            "probe-random",
            "linear probe on random features",
            "the linear probe on the features of a randomly initialised copy of the model (same architecture, "
            "seeded, no pretraining): what the architecture alone gives; the probe's lead over it is what "
            "pretraining bought",
            "random-features",
            "C",
            -2,
        ),
    )
}


@dataclass
class Outcome:
    """A fitted reference: its choice on validation, validation accuracy, test predictions, cost."""

    name: str
    chosen: dict
    grid: dict
    val_accuracy: float
    val_scores: dict  # each candidate's validation accuracy
    test_predicted: np.ndarray
    test_logits: np.ndarray | None  # class scores (probabilities for the regressions), for top-5 and loss
    parameters: int  # numbers the fitted model holds
    fit_s: float
    predict_s: float
    extra: dict = field(default_factory=dict)


def pool_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [N, C, H, W] -> float [N, F] with F <= MAX_PIXELS (average pooling by an integer factor)."""
    n, c, h, w = images.shape
    f = 1
    while c * (h // f) * (w // f) > MAX_PIXELS:
        f += 1
    x = images.astype(np.float32)
    if f > 1:
        h2, w2 = h // f, w // f
        x = x[:, :, : h2 * f, : w2 * f].reshape(n, c, h2, f, w2, f).mean((3, 5))
    return x.reshape(n, -1)


def _standardise(train: np.ndarray, *others: np.ndarray):
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(a - mean) / std for a in (train, *others)]


def fit_reference(
    name: str,
    train: np.ndarray,
    y_train: np.ndarray,
    val: np.ndarray,
    y_val: np.ndarray,
    test: np.ndarray,
    num_classes: int,
    seed: int,
) -> Outcome:
    """Fit one reference on train (inputs already pixels or features as its Reference says), choose its
    hyperparameter on val, and predict test once with the chosen one. Problems this small run on one BLAS
    thread: with two, threads spin-waiting on a busy machine made the fits twenty times slower (measured)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1 if train.size < 50_000_000 else None):
        return _fit(name, train, y_train, val, y_val, test, num_classes, seed)


def _fit(name, train, y_train, val, y_val, test, num_classes, seed) -> Outcome:
    t0 = time.perf_counter()
    if name == "majority":
        counts = np.bincount(y_train, minlength=num_classes)
        cls = int(counts.argmax())  # ties: the lowest class index
        probs = counts / counts.sum()
        fit_s = time.perf_counter() - t0
        return Outcome(
            name,
            {"class": cls},
            {},
            float((y_val == cls).mean()) if len(y_val) else float("nan"),
            {},
            np.full(len(test), cls),
            np.tile(probs, (len(test), 1)),
            num_classes,
            fit_s,
            0.0,
        )
    if name in ("pixels", "probe", "probe-random"):
        return _logistic(name, *_standardise(train, val, test), y_train, y_val, num_classes, seed, t0)
    if name == "knn":
        return _knn(train, y_train, val, y_val, test, num_classes, t0)
    raise ValueError(f"unknown reference '{name}'")


def _logistic(name, train, val, test, y_train, y_val, num_classes, seed, t0) -> Outcome:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    scores, models = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in C_GRID:  # ascending C, each fit starting from the last one's solution (same optimum, fewer steps)
            model = LogisticRegression(C=c, max_iter=1000, tol=1e-4, random_state=seed)
            if models:
                prev = models[C_GRID[C_GRID.index(c) - 1]]
                model.set_params(warm_start=True)
                model.coef_, model.intercept_ = prev.coef_.copy(), prev.intercept_.copy()
            model.fit(train, y_train)
            scores[c], models[c] = float(model.score(val, y_val)), model
    best = max(C_GRID, key=lambda c: (scores[c], -abs(np.log10(c))))  # ties: nearest to C = 1
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = models[best]
    probs = np.zeros((len(test), num_classes))
    probs[:, model.classes_] = model.predict_proba(test)
    predict_s = time.perf_counter() - t1
    coef = model.coef_.size + model.intercept_.size
    return Outcome(
        name,
        {"C": best},
        {"C": list(C_GRID)},
        scores[best],
        {str(c): s for c, s in scores.items()},
        probs.argmax(1),
        probs,
        int(coef),
        fit_s,
        predict_s,
        {"converged": bool(np.all(model.n_iter_ < 1000))},
    )


def _knn(train, y_train, val, y_val, test, num_classes, t0) -> Outcome:
    from sklearn.neighbors import KNeighborsClassifier

    unit = lambda a: a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)  # noqa: E731 - cosine = dot of units
    train, val, test = unit(train), unit(val), unit(test)
    grid = [k for k in K_GRID if k <= len(train)] or [1]
    scores = {}
    for k in grid:
        scores[k] = float(KNeighborsClassifier(n_neighbors=k).fit(train, y_train).score(val, y_val))
    best = max(grid, key=lambda k: (scores[k], -k))  # ties: the smaller k
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = KNeighborsClassifier(n_neighbors=best).fit(train, y_train)
    probs = model.predict_proba(test)
    full = np.zeros((len(test), num_classes))
    full[:, model.classes_] = probs
    predict_s = time.perf_counter() - t1
    return Outcome(
        "knn",
        {"k": best},
        {"k": grid},
        scores[best],
        {str(k): s for k, s in scores.items()},
        full.argmax(1),
        full,
        int(train.size),
        fit_s,
        predict_s,
    )
