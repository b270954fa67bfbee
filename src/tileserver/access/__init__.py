"""Access control (issue 15): tiers, credentials and the view of an image a tier may see.

- `policy.py`: the tiers (`full`, `capped`, `watermarked`, `redacted`, `denied`) and the rules that give each image
  one for anonymous viewers and one for authorised ones (settings JSON, sidecar files, a hook).
- `tokens.py`: HMAC-SHA256 tokens and signed URLs (no shared state: any replica with the key verifies them), and
  the `Viewer` of the request being answered (a context variable the middleware sets).
- `view.py`: the image as a capped tier presents it (`ImageMeta` with the levels above the cap removed) and the
  translation of a request made against that view back to the image's own pixels.

The ASGI middleware that reads the credentials (cookie, bearer token, signed URL, a trusted proxy's identity
header) and strips the signature parameters before any protocol parses the query is web/access.py.

Layers: this package sits just below the core, which consults it (plain models, no pyvips, no starlette); the web
layer installs the middleware. No protocol imports this package: every protocol sees the tier through `core.info`
and `core.render`, so none can show more than the tier allows.
"""
