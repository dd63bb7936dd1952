"""Distributed engines: thin wrappers that run the library's own per-chunk code on Ray.

Nothing here imports Ray at module import time: Ray is the optional extra ``pip install -e ".[ray]"``,
and ``require_ray`` turns its absence into one ``ConfigError`` line.
"""
