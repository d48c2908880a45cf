"""Reports: pure functions of result records (read from result.json files by peftlab.results), no torch.
table (the comparison table and context), stats (summaries over seeds), findings (sentences built from
the numbers), plots (PNG bytes), document (blocks -> Markdown / HTML), build (the whole report, and
write_report, the one function that writes files)."""

from .build import REPORT_PLOTS, build_report, report_blocks, write_report
from .datasize import data_size_lines
from .document import Bullets, Figure, Heading, Para, Table, to_html, to_markdown
from .findings import findings
from .stats import Summary, summarize
from .table import (
    COLUMNS,
    accuracy_summary,
    context_lines,
    format_markdown,
    format_text,
    groups,
    noise_lines,
    ordered,
    summary_markdown,
    table_rows,
)

__all__ = [
    "COLUMNS",
    "REPORT_PLOTS",
    "Bullets",
    "Figure",
    "Heading",
    "Para",
    "Summary",
    "Table",
    "accuracy_summary",
    "build_report",
    "context_lines",
    "data_size_lines",
    "findings",
    "format_markdown",
    "format_text",
    "groups",
    "noise_lines",
    "ordered",
    "report_blocks",
    "summarize",
    "summary_markdown",
    "table_rows",
    "to_html",
    "to_markdown",
    "write_report",
]
