"""Tables owned by the pipelines part of cxm."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.pipelines")
