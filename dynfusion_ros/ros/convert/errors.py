"""The one exception every message conversion raises."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager


class ConversionError(ValueError):
    """A message could not be converted. ``field`` names the culprit, ``problem`` says why.

    Nodes catch it, report ``<topic>: <message>`` on /diagnostics and carry on with the
    frame's other sensors; the CLI prints it with the bag and topic.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    @property
    def kind(self) -> str:
        """What a counter keys it by: "malformed <field>", with the names a message gave
        left out (``fields['x']`` -> ``fields[...]``): they must not become keys."""
        return "malformed " + re.sub(r"\[[^\]]*\]|'[^']*'", "[...]", self.field)


@contextmanager
def core_errors_as(field: str) -> Iterator[None]:
    """Re-raise a core type's validation ValueError as a ConversionError naming ``field``."""
    try:
        yield
    except ConversionError:
        raise
    except ValueError as error:
        raise ConversionError(field, str(error)) from error
