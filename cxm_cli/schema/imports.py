"""Tables owned by the imports part of cxm."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.imports")
