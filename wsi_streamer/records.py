"""Checked JSON documents: what the caches store is data, never code (no pickle).

``load_json`` refuses pickles (what versions before the JSON encodings wrote); ``Doc`` gives
typed access to one object, so a wrong type, a missing or an extra field raises
``CacheEntryError`` (a miss for the caller), never a surprise further on."""

from __future__ import annotations

import json
from typing import Any


class CacheEntryError(ValueError):
    """A cache entry this version does not read; ``stale`` when only its version differs."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


def load_json(blob: bytes) -> Any:
    refuse_pickle(blob)
    try:
        return json.loads(blob)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CacheEntryError(f"not JSON: {exc}") from None


def refuse_pickle(blob: bytes) -> None:
    if blob[:1] == b"\x80":  # PROTO opcode: what versions before the JSON encodings wrote
        raise CacheEntryError("a pickle written by an older version (not loaded)", stale=True)


def check_schema(doc: Doc, schema: str, version: int) -> None:
    if doc.raw("schema") != schema:
        raise CacheEntryError(f"schema {doc.raw('schema')!r}, not {schema!r}")
    if doc.raw("version") != version:
        raise CacheEntryError(f"{schema} version {doc.raw('version')!r}, this build reads "
                              f"{version}", stale=True)


class Doc:
    """Typed access to one decoded JSON object; wrong types raise ``CacheEntryError``."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise CacheEntryError(f"{where}: not a JSON object")
        self.value: dict[str, Any] = value
        self.where = where

    def keys(self, names: set[str]) -> None:
        if set(self.value) != names:
            raise CacheEntryError(f"{self.where}: fields {sorted(set(self.value) ^ names)}")

    def raw(self, name: str) -> Any:
        return self.value.get(name)

    def _typed(self, name: str, kind: type | tuple[type, ...]) -> Any:
        value = self.value.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise CacheEntryError(f"{self.where}: {name} is {type(value).__name__}")
        return value

    def integer(self, name: str) -> int:
        value: int = self._typed(name, int)
        if value < 0:
            raise CacheEntryError(f"{self.where}: {name} is negative")
        return value

    def number(self, name: str) -> float:
        return float(self._typed(name, (int, float)))

    def number_or_none(self, name: str) -> float | None:
        return None if self.value.get(name) is None else self.number(name)

    def text(self, name: str) -> str:
        value: str = self._typed(name, str)
        return value

    def flag(self, name: str) -> bool:
        value: bool = self._typed(name, bool)
        return value

    def items(self, name: str) -> list[Any]:
        value: list[Any] = self._typed(name, list)
        return value

    def text_pairs(self, name: str) -> tuple[tuple[str, str], ...]:
        """A list of ``[text, text]`` pairs (properties) as a tuple of tuples."""
        pairs = []
        for pair in self.items(name):
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(p, str) for p in pair)):
                raise CacheEntryError(f"{self.where}: an item of {name} is not a [text, text] "
                                      "pair")
            pairs.append((pair[0], pair[1]))
        return tuple(pairs)

    def doc(self, name: str) -> Doc:
        return Doc(self.value.get(name), f"{self.where}.{name}")
