"""Trait types for spawner options that JupyterHub configs write in more than one form."""

from __future__ import annotations

import shlex
from typing import Any

from traitlets import Integer, List, TraitError, Unicode

UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class Command(List):  # type: ignore[type-arg]
    """A command line: a list of strings, or one string split the way a shell would."""

    def __init__(self, default_value: Any = None, **kwargs: Any) -> None:
        super().__init__(Unicode(), default_value, **kwargs)

    def set(self, obj: Any, value: Any) -> None:
        # List.set would wrap a string as [string]; split it instead
        super().set(obj, shlex.split(value) if isinstance(value, str) else value)


class ByteSize(Integer):  # type: ignore[type-arg]
    """A number of bytes, also written as '512M', '2G' or '1.5T' (powers of 1024)."""

    info_text = "a number of bytes, or a string like '512M' or '2G'"

    def validate(self, obj: Any, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().upper().removesuffix("B")
            factor = UNITS.get(text[-1:], 1)
            number = text[:-1] if text[-1:] in UNITS else text
            try:
                value = int(float(number) * factor)
            except ValueError:
                raise TraitError(f"{self.name}: {value!r} is not {self.info_text}") from None
        return super().validate(obj, value)
