"""The channel selector `;c=<spec>` of a multi-band image: which bands to show, in which colours, over
which range of sample values. It works on every image with more than one band (an OME-TIFF's channels,
a multi-sample 16-bit TIFF, even an RGB image), so an identifier such as `cells.ome.tif;c=1:100-2000:ff0000`
names a view of the file, and every URL a viewer builds from its info document keeps the choice.

Spec: channels separated by commas, each `N[:[LOW-HIGH][:RRGGBB]]`, N counted from 1 (as OMERO does),
LOW-HIGH the sample values shown as black and as full colour (the display window), RRGGBB the hex
colour the channel adds to the composite. `c=1:100-2000:ff0000,3::00ff00` shows channel 1 in red over
100..2000 and channel 3 in green over its default window; `c=2` shows channel 2 alone, in grey.

A channel chosen without a colour keeps the image's own (OME) colour, or else the default sequence
by its number (red, green, blue, cyan, magenta, yellow, grey); a single channel chosen alone without a
colour is grey, and keeps its full depth in PNG and TIFF output (`imaging/channels.py`). Without a
window the image's own window is used, or else one from the data.

This module parses the spec (`parse_spec`, a 400 for anything malformed) and describes the chosen
view (`view_meta`); `ChannelView` applies it to any `SourceImage` by picking bands out of its reads.
Formats that store channels apart (OME-TIFF) read only the chosen ones instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadRequest
from ..models import Channel, ImageMeta, OutputFormat
from .base import Box4, Selector, SourceImage, no_selection
from .passthrough import StoredTile

RGB = tuple[int, int, int]
GREY: RGB = (255, 255, 255)
# the usual fluorescence sequence, as viewers (OMERO, QuPath, napari) colour channels that have none
DEFAULT_COLOURS: tuple[RGB, ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255),
                                    (255, 255, 0), GREY)
MAX_CHOICES = 64
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?"
_HEX = "[0-9A-Fa-f]{6}"
_ITEM = re.compile(rf"([0-9]{{1,4}})(?::({_NUMBER})-({_NUMBER})(?::({_HEX}))?|::({_HEX}))?")


@dataclass(frozen=True)
class ChannelChoice:
    """One channel of a `c=` spec: its number (from 1), and its window and colour when given."""

    number: int
    window: tuple[float, float] | None = None
    color: RGB | None = None


def parse_spec(spec: str) -> tuple[ChannelChoice, ...]:
    """The choices of a `c=` spec, in order. Pure; a 400 for a malformed spec, a channel 0, a window
    whose low end is not below its high end, or a channel named twice.

    `parse_spec("1:100-2000:ff0000,3::00ff00") == (ChannelChoice(1, (100.0, 2000.0), (255, 0, 0)),
    ChannelChoice(3, None, (0, 255, 0)))`."""
    items = spec.split(",")
    if not spec or len(items) > MAX_CHOICES:
        raise BadRequest(f"c= needs 1 to {MAX_CHOICES} channels, e.g. c=1:100-2000:ff0000,3::00ff00")
    out: list[ChannelChoice] = []
    for item in items:
        m = _ITEM.fullmatch(item)
        if m is None:
            raise BadRequest(f"bad channel {item!r} in c=: expected N[:[LOW-HIGH][:RRGGBB]], N from 1")
        number = int(m[1])
        window = None
        if m[2] is not None:
            low, high = float(m[2]), float(m[3])
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise BadRequest(f"bad window in c= channel {item!r}: LOW must be below HIGH")
            window = (low, high)
        colour = m[4] or m[5]
        color = (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)) if colour else None
        if number < 1:
            raise BadRequest("c= channels are numbered from 1")
        if any(c.number == number for c in out):
            raise BadRequest(f"channel {number} named twice in c=")
        out.append(ChannelChoice(number, window, color))
    return tuple(out)


def default_colour(index: int, count: int) -> RGB:
    """The colour of channel `index` (from 0) of `count` channels that have none: grey for one channel,
    else the default sequence."""
    return GREY if count == 1 else DEFAULT_COLOURS[index % len(DEFAULT_COLOURS)]


def chosen(meta: ImageMeta, spec: str) -> tuple[tuple[int, ...], tuple[Channel, ...]]:
    """(bands, channels) of `spec` applied to `meta`: the 0-based bands the spec names, and the
    channel each shows (its name; the spec's colour and window, else the image's own, else the default
    colour; none for a single channel chosen alone without a colour). A channel the image lacks is a 400."""
    choices = parse_spec(spec)
    missing = [c.number for c in choices if c.number > meta.bands]
    if missing:
        raise BadRequest(f"c= names channel {missing[0]}; this image has {meta.bands}")
    own = meta.channels if len(meta.channels) == meta.bands else (Channel(),) * meta.bands
    channels = []
    for c in choices:
        base = own[c.number - 1]
        color = c.color
        if color is None and len(choices) > 1:
            color = base.color or default_colour(c.number - 1, meta.bands)
        channels.append(Channel(base.name, color, c.window or base.window))
    return tuple(c.number - 1 for c in choices), tuple(channels)


def view_meta(meta: ImageMeta, bands: tuple[int, ...], channels: tuple[Channel, ...], ident: str) -> ImageMeta:
    """The metadata of a view of `bands` of `meta`, named `ident`: no stored tiles to pass through
    (its pixels are always rendered from the chosen bands)."""
    return replace(meta, ident=ident, bands=len(bands), channels=channels, has_alpha=False, has_icc=False,
                   colorspace="grey" if len(bands) == 1 else "multiband", compression="",
                   min_values=tuple(meta.min_values[b] for b in bands),
                   max_values=tuple(meta.max_values[b] for b in bands))


def selection_ident(ident: str, selector: Selector) -> str:
    """The whole identifier of `selector` applied to the file identifier `ident` (keys in their order)."""
    parts = [ident]
    if selector.page is not None:
        parts.append(f"page={selector.page}")
    if selector.associated is not None:
        parts.append(f"associated={selector.associated}")
    if selector.channels is not None:
        parts.append(f"c={selector.channels}")
    return ";".join(parts)


def pick_bands(img: Any, bands: tuple[int, ...]) -> Any:
    """Bands `bands` of `img`, in that order (the image itself when that is all of it)."""
    if bands == tuple(range(img.bands)):
        return img
    picked = [img.extract_band(b) for b in bands]
    return picked[0].bandjoin(picked[1:]) if len(picked) > 1 else picked[0]


class ChannelView:
    """A `c=` view of any image: the chosen bands of its reads, described by `view_meta`."""

    def __init__(self, image: SourceImage, bands: tuple[int, ...], meta: ImageMeta) -> None:
        self.image = image
        self.bands = bands
        self.meta = meta

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        # lazy: errors surface in render
        return pick_bands(self.image.read(level, box, page, layers=layers), self.bands)

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        return None

    def select(self, selector: Selector) -> SourceImage:
        return no_selection(self, selector)


def select_channels(image: SourceImage, selector: Selector) -> SourceImage:
    """`select` for a format whose bands are read together: `;c=` as a `ChannelView`, every other
    selector as `no_selection`. A one-band image has one channel to choose (`c=1`: its samples at full
    depth in PNG and TIFF)."""
    if selector.channels is None or selector.page is not None or selector.associated is not None:
        return no_selection(image, selector)
    meta = image.meta
    bands, channels = chosen(meta, selector.channels)
    return ChannelView(image, bands, view_meta(meta, bands, channels, selection_ident(meta.ident, selector)))
