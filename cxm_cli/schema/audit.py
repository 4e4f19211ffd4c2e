"""Tables owned by the audit part of cxm."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.audit")
