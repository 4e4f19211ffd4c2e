"""Rows describing each sequence, for ``cxm sequences list``."""

from __future__ import annotations

from typing import Any

from cxm_cli.sequences import load_sequences


def sequence_rows(workspace, db) -> list[dict[str, Any]]:
    sequence_set = load_sequences(workspace)
    active_counts = {
        row["sequence"]: row["n"]
        for row in db.query(
            "SELECT sequence, COUNT(*) AS n FROM enrollments WHERE status = 'active' "
            "GROUP BY sequence"
        )
    }
    rows = []
    for name, sequence in sorted(sequence_set.sequences.items()):
        problems = sequence_set.invalid.get(sequence.path.name, 0)
        if problems:
            status = f"{problems} problem(s)"
        elif not sequence.enabled:
            status = "disabled"
        else:
            status = "ok"
        rows.append(
            {
                "name": name,
                "file": sequence.path.name,
                "description": sequence.description,
                "trigger": ", ".join(sequence.trigger_types) or "(switch only)",
                "steps": len(sequence.steps),
                "group": (
                    f"{sequence.group} ({sequence.priority})" if sequence.group else ""
                ),
                "reenroll": (
                    sequence.reenroll
                    if sequence.reenroll != "cooldown"
                    else f"after {sequence.cooldown}"
                ),
                "exits": [rule.reason for rule in sequence.exits],
                "active": active_counts.get(name, 0),
                "status": status,
            }
        )
    listed = {row["file"] for row in rows}
    for file_name, count in sorted(sequence_set.invalid.items()):
        if file_name not in listed:
            rows.append(
                {
                    "name": "",
                    "file": file_name,
                    "description": "",
                    "trigger": "",
                    "steps": 0,
                    "group": "",
                    "reenroll": "",
                    "exits": [],
                    "active": 0,
                    "status": f"{count} problem(s)",
                }
            )
    return rows
