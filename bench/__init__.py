"""Tools that run payment-worker on the local stack and measure or check it.

``harness`` drives the real stack (worker processes, producing, read_committed reads) and
is shared by the integration tests, the benchmark, the scaling proof and the chaos run.
Not part of the shipped package: run from a checkout (``make bench``, ``make chaos``).
"""
