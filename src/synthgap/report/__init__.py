"""Tables, plots and a self-contained HTML report of a transfer study's output folder.

Names load on first use (synthgap.lazy_exports), so that the HTML every report shares (report.html_base,
which the data audit's page uses too) comes without the plots and matplotlib."""

from synthgap import lazy_exports

_EXPORTS = {
    "write_report": "synthgap.report.html",
    "plot_accuracy_vs_fraction": "synthgap.report.plots",
    "plot_confusion": "synthgap.report.plots",
    "aggregate": "synthgap.report.tables",
    "markdown_table": "synthgap.report.tables",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
