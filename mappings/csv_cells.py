"""Spreadsheet cells that cannot run as formulas, and the exact inverse for imports.

OWASP's rule for CSV injection: a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return is read as a formula by spreadsheets, so it is written with a single quote in front.

So that every value survives export and import unchanged (a picklist value can legitimately
be ``-2+3``, ``=SUM(A1)`` or ``'=y``), the rule here is:

- ``escape_cell`` prefixes one ``'`` to a text that starts with zero or more ``'`` followed by
  a trigger character (``=SUM(A1)`` → ``'=SUM(A1)``, ``'=y`` → ``''=y``);
- ``unescape_cell`` removes one leading ``'`` from a text that starts with one or more ``'``
  followed by a trigger character (``'=SUM(A1)`` → ``=SUM(A1)``, ``''=y`` → ``'=y``);
- everything else (``'hello``, ``MQL``, ``''``) is left as it is by both.

``unescape_cell(escape_cell(s)) == s`` for every text ``s``, and an escaped cell never starts
with a trigger character. A cell a person typed without the quote (``=SUM(A1)``) is also left as
it is by ``unescape_cell``, so a file saved back by a spreadsheet, which drops the quote,
imports too. Values that are not text (numbers, booleans, None) pass through both unchanged.
"""

from __future__ import annotations

import re

TRIGGERS = "=+-@\t\r"

_NEEDS_ESCAPE = re.compile("'*[" + re.escape(TRIGGERS) + "]")
_ESCAPED = re.compile("'+[" + re.escape(TRIGGERS) + "]")


def escape_cell(value):
    """The value as a spreadsheet shows it as text, never evaluates it."""
    if isinstance(value, str) and _NEEDS_ESCAPE.match(value):
        return "'" + value
    return value


def unescape_cell(value):
    """Undo exactly what escape_cell did."""
    if isinstance(value, str) and _ESCAPED.match(value):
        return value[1:]
    return value
