"""``payment-worker sandbox gateway|user-service``: a stand-in for an outside service,
served over HTTP in the foreground, for local runs and tests.

The one module of the worker that imports ``sandbox`` (the import contract "only the CLI
starts a stand-in" in pyproject.toml names it): nothing else of the worker may depend on a
stand-in.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from types import FrameType

from config.settings import Settings
from sandbox.gateway_server import SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer

logger = logging.getLogger("payment_worker")


def _stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_sandbox(_: Settings, args: argparse.Namespace) -> int:
    """Serve the stand-in ``args.sandbox`` names on ``--host``/``--port`` until Ctrl-C or
    SIGTERM."""
    server: SandboxGatewayServer | UserServiceStubServer
    delay = args.answer_delay_seconds
    if args.sandbox == "gateway":
        server = SandboxGatewayServer(args.host, args.port, answer_delay_seconds=delay)
    else:
        server = UserServiceStubServer(args.host, args.port, answer_delay_seconds=delay)
    # As a container's first process it gets no default action for SIGTERM: without a
    # handler `docker stop` would wait out its grace period and kill it.
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    logger.info(f"sandbox {args.sandbox} listening", extra={"url": server.url})
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
