"""Migration sets, one per part of cxm, applied in this order.

A part that needs tables owns one set in its own module here. New migrations are
appended to the end of their set and never edited once released.
"""

from cxm_cli.schema import (
    audit,
    core,
    engine,
    imports,
    inbound,
    pipelines,
    reviews,
)

MIGRATION_SETS = [
    core.migrations,
    imports.migrations,
    engine.migrations,
    inbound.migrations,
    pipelines.migrations,
    reviews.migrations,
    audit.migrations,
]
