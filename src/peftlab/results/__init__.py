"""Results: result.json's schema and loader (schema), and atomic writes (io). No torch."""

from .io import write_bytes_atomic, write_json_atomic, write_text_atomic
from .schema import (
    FINAL,
    SCHEMA_VERSION,
    Result,
    Status,
    is_ok,
    load_result,
    load_results,
    test_metrics,
    upgrade,
    val_metrics,
)

__all__ = [
    "FINAL",
    "SCHEMA_VERSION",
    "Result",
    "Status",
    "is_ok",
    "load_result",
    "load_results",
    "test_metrics",
    "upgrade",
    "val_metrics",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
