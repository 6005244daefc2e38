"""``realname serve``: uvicorn, and with several worker processes one listening socket each.

uvicorn's multi-process mode binds one socket in the supervisor and every worker accepts from
it. Connections then go to whichever worker wakes first, and a burst of new connections (a load
balancer or a client pool opening its connections at once) can land mostly on one worker while
the others sit idle: each keep-alive connection stays where it landed. Here each worker binds
its own socket with ``SO_REUSEPORT`` (Linux), so the kernel spreads new connections evenly
over the workers by their addresses, and a worker that dies takes only its own socket with it
(the supervisor starts a new worker, which binds again).

The supervisor itself (health checks, restarts, signals) is uvicorn's; only where a worker's
socket comes from changes. Where ``SO_REUSEPORT`` is missing, with one worker, or with port 0
(each worker would get a different port), it is uvicorn's own mode.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

logger = logging.getLogger(__name__)

#: uvicorn's exit code when a server cannot start.
STARTUP_FAILURE = 3


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other sockets of this user may share
    (``SO_REUSEPORT``): the kernel spreads incoming connections over all of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class OwnSocketProcess(multiprocess.Process):
    """A uvicorn worker that listens on a socket it binds itself (in the worker)."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        # Runs in the worker process (the coverage of subprocesses is not collected).
        try:
            own = listening_socket(self.config.host, self.config.port)
        except OSError as exc:
            logger.error("cannot listen", extra={"error": str(exc)})
            sys.exit(STARTUP_FAILURE)
        super().target([own])


def own_sockets_supported(workers: int, port: int) -> bool:
    return workers > 1 and port != 0 and hasattr(socket, "SO_REUSEPORT")


def run(app: str, *, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve ``app`` (an import string of a factory) like ``uvicorn.run(..., factory=True)``;
    with several workers, each on a socket of its own."""
    if not own_sockets_supported(workers, port):
        uvicorn.run(app, factory=True, host=host, port=port, workers=workers, **options)
        return
    config = uvicorn.Config(app, factory=True, host=host, port=port, workers=workers, **options)
    # Fail at once (not in every worker, over and over) when the address is taken.
    try:
        listening_socket(host, port).close()
    except OSError as exc:
        logger.error("cannot listen", extra={"error": str(exc)})
        sys.exit(STARTUP_FAILURE)
    logger.info(
        "listening",
        extra={"host": host, "port": port, "workers": workers, "sockets": "one per worker"},
    )
    # uvicorn's supervisor makes its workers with this module's ``Process``: ours binds its
    # own socket. This process only supervises, so the replacement affects nothing else.
    multiprocess.Process = OwnSocketProcess  # type: ignore[misc]
    with contextlib.suppress(KeyboardInterrupt):
        multiprocess.Multiprocess(config, sockets=[]).run()
