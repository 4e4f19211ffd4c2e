"""Import every part of cxm that registers hooks, step kinds or decorators.

Registration happens at import time; the CLI, the runner and the web service
import this module once so that every part is present whatever command runs.
"""

import importlib
import logging

log = logging.getLogger(__name__)

# Modules that register event hooks, step kinds or outbound decorators.
# A module missing here is simply not active. Hooks run in this order: pipeline
# rules first, so a trigger filtered on a stage sees the stage the event caused.
FEATURE_MODULES = [
    "cxm_cli.pipelines",
    "cxm_cli.engine",
    "cxm_cli.inbound",
    "cxm_cli.reviews",
]

_loaded = False


def load_features() -> None:
    global _loaded
    if _loaded:
        return
    for name in FEATURE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.debug("feature module %s not present", name)
    _loaded = True
