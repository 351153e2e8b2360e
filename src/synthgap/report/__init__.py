"""Tables, plots and a self-contained HTML report of a transfer study's output folder."""

from synthgap.report.html import write_report
from synthgap.report.plots import plot_accuracy_vs_fraction, plot_confusion
from synthgap.report.tables import aggregate, markdown_table

__all__ = ["aggregate", "markdown_table", "plot_accuracy_vs_fraction", "plot_confusion", "write_report"]
