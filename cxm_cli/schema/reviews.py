"""Tables owned by the reviews part of cxm."""

from sqlite_utils.migrations import Migrations

migrations = Migrations("cxm.reviews")
