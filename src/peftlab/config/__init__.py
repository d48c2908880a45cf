"""Configuration: run options as checked dataclasses (run), their values (values), and the files they
are read from and written to (files: --config, config.yaml). Torch-free."""

from .files import META_KEY, PROTOCOLS, build, config_yaml, git_commit, method_config, protocol_values, read_file
from .run import (
    BASELINES,
    BUNDLED_NAME,
    DEFAULT_BASELINES,
    DEFAULT_DATASET,
    DEFAULT_METHODS,
    DEFAULT_TEST_SIZE,
    DEFAULT_TRAIN_SIZE,
    DEFAULT_VAL_SIZE,
    SCRATCH_LABEL,
    DataOptions,
    RunConfig,
    RunSpec,
    TrainConfig,
    check_tune,
    run_fields,
    tuned_options,
)
from .values import coerce, field_type, item_type

__all__ = [
    "BASELINES",
    "BUNDLED_NAME",
    "DEFAULT_BASELINES",
    "SCRATCH_LABEL",
    "DEFAULT_DATASET",
    "DEFAULT_METHODS",
    "DEFAULT_TEST_SIZE",
    "DEFAULT_TRAIN_SIZE",
    "DEFAULT_VAL_SIZE",
    "META_KEY",
    "PROTOCOLS",
    "DataOptions",
    "RunConfig",
    "RunSpec",
    "TrainConfig",
    "build",
    "check_tune",
    "coerce",
    "config_yaml",
    "field_type",
    "git_commit",
    "item_type",
    "method_config",
    "protocol_values",
    "read_file",
    "run_fields",
    "tuned_options",
]
