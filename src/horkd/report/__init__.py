"""Reports people read: tables, accuracy versus resolution, the orders' effect, model cost."""

from horkd.report.builder import build_report, cost_table

__all__ = ["build_report", "cost_table"]
