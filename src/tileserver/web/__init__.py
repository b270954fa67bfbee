"""The HTTP edge the protocols call into: validators, conditional requests, cache headers and remembered
responses (`http`), and the replay middleware that answers repeated GETs before routing (`replay`)."""
