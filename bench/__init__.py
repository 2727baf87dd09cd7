"""Tools that run payment-worker on the local stack and measure or check it.

They drive the real stack through ``tests.support.harness`` (worker processes, producing,
read_committed reads), which the integration tests use too; the import runs one way only:
tests never import ``bench``.
Not part of the shipped package: run from a checkout (``make bench``, ``make chaos``).
"""
