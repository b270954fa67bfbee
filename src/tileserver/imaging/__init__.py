"""Pixels in, bytes out: the render pipeline (`render`), IIP image processing (`process`), encoders
(`encode`, `jpeg`) and pyramid conversion (`convert`). Imports only `sources` below it."""
