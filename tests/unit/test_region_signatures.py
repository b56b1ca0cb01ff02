"""Region reads: the internal entry points take the slide and the level positionally and the
box by keyword only (their orders differed); the wsistream-compatible ones keep wsistream's
positional orders."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from wsi_streamer.patches.backends.base import BackendSlide, PlainSlide, SlideBackend
from wsi_streamer.patches.backends.native import NativeSlide
from wsi_streamer.patches.backends.openslide import OpenSlideSlide
from wsi_streamer.patches.handle import SlideHandle
from wsi_streamer.slide.region import read_level0_anchored, read_region, render_region

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _kinds(func: Callable[..., Any]) -> tuple[list[str], list[str]]:
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    return ([p.name for p in params if p.kind in POSITIONAL],
            [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY])


@pytest.mark.parametrize("func", [read_region, render_region, read_level0_anchored])
def test_internal_region_reads_take_the_box_by_keyword(func: Callable[..., Any]) -> None:
    positional, keyword = _kinds(func)
    assert positional == ["slide", "level"]
    assert {"width", "height"} <= set(keyword)


@pytest.mark.parametrize("func", [BackendSlide.read_region, PlainSlide.read_region,
                                  NativeSlide.read_region, OpenSlideSlide.read_region])
def test_streaming_slides_take_every_argument_by_keyword(func: Callable[..., Any]) -> None:
    assert _kinds(func) == ([], ["x", "y", "level", "width", "height", "out_size"])


def test_wsistream_signatures_stay_positional() -> None:
    assert _kinds(SlideBackend.read_region) == (["x", "y", "level", "width", "height"], [])
    assert _kinds(SlideHandle.read_region) == (["x", "y", "width", "height", "level"],
                                               ["out_size"])
