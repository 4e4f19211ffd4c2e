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
