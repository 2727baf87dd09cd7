"""Outbound calls: the User Service profile lookup and the payment gateway.

``clients.http`` gives every service the same guarantees (TLS, rotating credentials, a
time budget, retries, a circuit breaker), so each client only says what its answers mean.
Nothing here is built at import time; ``pipelines.wiring`` builds the clients.
"""
