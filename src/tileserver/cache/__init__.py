"""Caches: the in-process LRUs (`memory`) that the core and the readers keep. Shared tiers (redis,
memcached) will sit beside it, behind the same small interface."""
