"""Injected randomness: every random component holds a ``numpy.random.Generator`` that the
pipeline reseeds from a ``SeedSequence`` (MONAI's ``Randomizable`` pattern). Nothing here or in
any component calls the global ``random`` or ``np.random`` state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

SeedLike = int | np.random.SeedSequence | None


class Randomizable:
    """Mixin: ``self._rng`` is the component's generator; ``set_random_state`` replaces it.
    Components holding other components override ``children`` so reseeding recurses."""

    _rng: np.random.Generator

    def __init__(self, seed: SeedLike = None) -> None:
        self._rng = np.random.default_rng(seed)

    @property
    def rng(self) -> np.random.Generator:
        return self._rng

    def set_random_state(self, seed: SeedLike) -> None:
        self._rng = np.random.default_rng(seed)

    def children(self) -> Iterable[Any]:
        return ()


def reseed(component: Any, seq: np.random.SeedSequence) -> None:
    """Reseed ``component`` (and, recursively, its children) from ``seq``: the component takes
    ``seq`` itself, child ``i`` takes ``seq.spawn``-like child ``(i,)`` of it. Anything that is
    not ``Randomizable`` keeps its state, except that a ``numpy.random.Generator`` in its
    ``_rng`` attribute (wsistream's convention for a user's own random component) is replaced
    by one from ``seq``; its children are visited either way."""
    if component is None:
        return
    if isinstance(component, Randomizable):
        component.set_random_state(seq)
        kids = list(component.children())
    else:
        if isinstance(getattr(component, "_rng", None), np.random.Generator):
            component._rng = np.random.default_rng(seq)
        kids = list(getattr(component, "transforms", None) or ())
    for index, child in enumerate(kids):
        reseed(child, child_seq(seq, index))


def generators(component: Any) -> list[np.random.Generator]:
    """The generators ``reseed`` would replace in ``component`` and its children, in the
    same order (their states are what a resumed pipeline restores)."""
    if component is None:
        return []
    found: list[np.random.Generator] = []
    own = getattr(component, "_rng", None)
    if isinstance(own, np.random.Generator):
        found.append(own)
    kids = (list(component.children()) if isinstance(component, Randomizable)
            else list(getattr(component, "transforms", None) or ()))
    for child in kids:
        found.extend(generators(child))
    return found


def child_seq(seq: np.random.SeedSequence, *path: int) -> np.random.SeedSequence:
    """A deterministic child of ``seq`` addressed by ``path`` (independent of spawn order)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, *path))
