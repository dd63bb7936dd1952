"""Synthetic AV2 scenarios: procedural road networks and lane-following road users.

Written in the exact AV2 motion-forecasting formats (scenario parquet + map JSON) so that the built-in
default data and the benchmarks go through the same reader as real data.
"""
