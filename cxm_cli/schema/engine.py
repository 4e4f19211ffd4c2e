"""Tables owned by the engine part of cxm."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.engine")
