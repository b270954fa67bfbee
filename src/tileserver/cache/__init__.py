"""Caches: the in-process LRUs (`memory`) that the core and the readers keep, the folder of derived pyramids
(`disk`), and the shared second-level cache of a cluster (`shared` over Redis or memcached, `backends`; entries
encoded by `codec`, never pickled). The core stacks them: memory -> shared -> render."""
