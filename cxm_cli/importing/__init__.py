"""Lead import: any real export in, one contact per person, nothing lost.

Other parts of cxm (the audit reads raw exports with it) call
:func:`import_file`; the CLI's ``cxm leads import`` is a thin wrapper.
"""

from cxm_cli.importing.importer import ImportOptions, ImportSummary, import_file

__all__ = ["ImportOptions", "ImportSummary", "import_file"]
