"""Reference baselines: what fine-tuning must beat, computed on exactly the run's training, validation and
test samples. majority (the chance level), pixels (logistic regression on the raw input), probe (a
converged linear probe on the frozen pretrained features) and knn (k-nearest neighbours on the same
features), each with its regularisation or k chosen on the validation split and the test split scored
once. scikit-learn fits them; the features are one forward pass of the frozen model over the images the
run already decoded. 'scratch' (the architecture trained from random initialisation) is a training run:
runs.worker makes it."""

from .classical import REFERENCES, Outcome, fit_reference
from .features import frozen_features

__all__ = ["REFERENCES", "Outcome", "fit_reference", "frozen_features"]
