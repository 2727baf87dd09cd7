"""Helpers shared by the tests and, one way only, by the benchmark tools in ``bench/``
(tests never import ``bench``)."""
