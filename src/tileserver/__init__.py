"""tileserver: an async, multi-protocol image tile server (IIP, IIIF, Zoomify, DeepZoom) on pyvips."""

__version__ = "0.1.0"
