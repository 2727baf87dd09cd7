"""``python -m bench.sandbox_process gateway|user-service PORT [ANSWER_DELAY_SECONDS]``.

The same servers as ``payment-worker sandbox ...``, without importing the worker's
pipelines (quixstreams, SQLAlchemy): the benchmark starts these often, on a busy machine.
"""

from __future__ import annotations

import contextlib
import sys

from sandbox.gateway_server import SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer


def main(argv: list[str]) -> int:
    name, port = argv[0], int(argv[1])
    delay = float(argv[2]) if len(argv) > 2 else 0.0
    server: SandboxGatewayServer | UserServiceStubServer
    if name == "gateway":
        server = SandboxGatewayServer("127.0.0.1", port, answer_delay_seconds=delay)
    elif name == "user-service":
        server = UserServiceStubServer("127.0.0.1", port, answer_delay_seconds=delay)
    else:
        print(f"unknown sandbox service {name!r}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
