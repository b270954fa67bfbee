"""The image sources one `Settings` configures: the root (a folder, a store, resolvers), the readers and their
caches, the format registry and the pixel budget. The core builds one set per process (core.py), and so does
each render child of the large lane (imaging/isolate.py), from the same settings, so a child opens an image
from its location exactly as the core would."""

from __future__ import annotations

from dataclasses import dataclass

from ..cache.disk import DiskStore
from ..settings import Settings
from . import vfs
from .base import Format, Selector, SourceImage
from .budget import PixelBudget
from .derived import DerivedFormat, DeriveOptions
from .jp2 import Jp2Format
from .local import Source
from .ome import OmeFormat
from .pyramid import PyramidReader, PyvipsFormat
from .registry import Registry
from .resolve import Resolver
from .slide import SlideFormat, SlideReader
from .stores import RemoteSource, options_of


@dataclass
class Sources:
    budget: PixelBudget
    source: Source | RemoteSource | Resolver
    reader: PyramidReader
    slides: SlideReader
    derivatives: DerivedFormat | None
    jp2: Jp2Format
    formats: Registry

    @classmethod
    def of(cls, settings: Settings) -> Sources:
        budget = PixelBudget.of(settings)
        source = root_of(settings)
        reader = PyramidReader(settings.virtual_tile_size, settings.open_images,
                               int(settings.decoded_cache_mb * 1024 * 1024))
        slides = SlideReader(settings.virtual_tile_size, int(settings.slide_cache_mb * 1024 * 1024),
                             int(settings.decoded_cache_mb * 1024 * 1024), budget)
        derivatives = derivatives_of(settings, reader, budget)
        libvips: Format = derivatives or PyvipsFormat(reader)
        jp2_bytes = int(settings.jp2_cache_mb * 1024 * 1024)  # the shared folder holds every worker's share
        jp2 = Jp2Format(jp2_bytes, settings.virtual_tile_size, settings.jp2_threads, share=settings.jp2_share,
                        share_bytes=jp2_bytes * settings.workers, budget=budget)
        formats = Registry([jp2, OmeFormat(reader), SlideFormat(slides), libvips])
        return cls(budget, source, reader, slides, derivatives, jp2, formats)

    def admitted(self, image: SourceImage) -> SourceImage:
        """`image` when it is within the pixel budget (sources/budget.py), else SourceTooLarge. An image
        answered from a preview while its pyramid is made (`provisional`) was checked by its format, by
        what the conversion holds."""
        if not image.meta.provisional:
            self.budget.check(image.meta)
        return image

    def open(self, path: str, ident: str, base: str | None = None, selector: Selector | None = None
             ) -> SourceImage:
        """The image at `path` as the core opens it: under `ident`, or, for a selection, `base`'s image with
        `selector`'s pick, each within the pixel budget."""
        if selector is None:
            return self.admitted(self.formats.open(path, ident))
        whole = self.admitted(self.formats.open(path, base or ident))
        return self.admitted(whole.select(selector))

    def close(self) -> None:
        if self.derivatives is not None:
            self.derivatives.close()
        vfs.close_now_files()


def root_of(settings: Settings) -> Source | RemoteSource | Resolver:
    """The image root: a folder, or a store URL (`root_url`: objects read by byte range, sources/vfs.py);
    behind the resolvers' templates and hook when there are any (sources/resolve.py)."""
    vfs.configure(int(settings.store_block_cache_mb * 1024 * 1024))
    vfs.configure_cache(settings.source_cache_dir, int(settings.source_cache_mb * 1024 * 1024))
    options = options_of(settings)
    base: Source | RemoteSource
    if settings.root_url is None:
        base = Source(settings.root, settings.filename_prefix, settings.filename_suffix,
                      settings.max_identifier_length, settings.filename_pattern)
    else:
        base = RemoteSource(settings.root_url, options, settings.filename_prefix, settings.filename_suffix,
                            settings.max_identifier_length)
    if not settings.resolvers and settings.resolver_hook is None:
        return base
    return Resolver(base, settings.resolvers, settings.resolver_hook, settings.resolver_roots, options)


def derivatives_of(settings: Settings, reader: PyramidReader, budget: PixelBudget) -> DerivedFormat | None:
    """Pyramids of large untiled images, when a derivative folder is configured."""
    if settings.derive_dir is None:
        return None
    store = DiskStore(settings.derive_dir, settings.derive_cache_bytes)
    options = DeriveOptions(int(settings.derive_min_megapixels * 1e6), settings.derive_quality,
                            settings.derive_preview_size, settings.derive_jobs)
    return DerivedFormat(PyvipsFormat(reader), store, options, budget)
