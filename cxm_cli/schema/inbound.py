"""Tables owned by the inbound part of cxm."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.inbound")
