"""Output helpers: tables on a terminal, plain data when piped."""

import io

from rich.console import Console

from cxm_cli.commands import _common


def test_a_phone_is_never_cut_in_two_on_a_narrow_terminal(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(_common, "stdout_is_terminal", lambda: True)
    monkeypatch.setattr(
        _common, "stdout_console", lambda: Console(file=screen, width=60)
    )
    rows = [
        {
            "id": 1,
            "name": "Maria Lopez with a long name",
            "email": "maria.lopez@example.com",
            "phone": "+13125550101",
            "source": "google-contacts-export",
        }
    ]

    _common.print_rows(rows, ["id", "name", "email", "phone", "source"])

    assert "+13125550101" in screen.getvalue()


def test_piped_rows_are_tab_separated_with_the_title_on_stderr(capsys):
    _common.print_rows([{"a": 1, "b": "x\ty"}], ["a", "b"], title="counts")

    captured = capsys.readouterr()
    assert captured.out == "a\tb\n1\tx y\n"
    assert "counts" in captured.err


def test_a_reader_that_stops_early_ends_the_command_quietly(workspace, tmp_path):
    """`cxm contacts list | head -1` under `set -o pipefail` must not fail."""
    import subprocess
    import sys

    rows = "\n".join(
        f"Person {n},person{n}@example.com,+1512555{n:04d}" for n in range(3000)
    )
    leads = tmp_path / "many.csv"
    leads.write_text("Name,Email,Phone\n" + rows + "\n", encoding="utf-8")
    base = [sys.executable, "-m", "cxm_cli", "--workspace", str(workspace.root)]
    imported = subprocess.run(
        [*base, "leads", "import", str(leads), "--existing-contacts"],
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr

    listing = subprocess.Popen(
        [*base, "contacts", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    listing.stdout.readline()
    listing.stdout.close()  # the reader goes away, as `head -1` does
    stderr = listing.stderr.read().decode()
    listing.wait(timeout=60)

    assert listing.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
