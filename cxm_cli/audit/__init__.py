"""The consultant's audit: where a business loses people, in numbers.

``run_audit`` reads a workspace's timeline in one ordered pass (see
:mod:`cxm_cli.audit.history`), computes every measure over a period, ranks the
few things to fix first, and returns one JSON-ready dict that the terminal,
Markdown and HTML renderers all print. :mod:`cxm_cli.audit.sources` builds a
throw-away workspace from a client's raw exports so the same audit runs on them.
"""

from cxm_cli.audit.options import AuditOptions, parse_bound
from cxm_cli.audit.report import run_audit

__all__ = ["AuditOptions", "parse_bound", "run_audit"]
