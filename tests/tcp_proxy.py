"""A TCP proxy on 127.0.0.1 in front of the suite's server (which may listen on a Unix-domain
socket only), for tests of what mg does over TCP: the options it sets on its socket, a link
that stops carrying data.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Mapping


class TcpProxy:
    """Forwards every connection to the server at ``target`` (libpq keywords).

    With ``stall_after``, it stops reading from a client once that client has sent so many
    bytes (``stalled`` is set then), as a saturated or dead link does; ``receive_buffer``
    fixes the listening socket's window, so what the proxy does not read stays with mg.
    """

    def __init__(
        self,
        target: Mapping[str, str],
        stall_after: int | None = None,
        receive_buffer: int | None = None,
    ) -> None:
        self.target = target
        self.stall_after = stall_after
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _server(self) -> socket.socket:
        host, port = self.target["host"], int(self.target["port"])
        if host.startswith("/"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(f"{host}/.s.PGSQL.{port}")
            return server
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = self._server()
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        other = {client: server, server: client}
        sent = 0
        limit = self.stall_after
        try:
            while not self.closing.is_set():
                stalled = limit is not None and sent >= limit
                wanted = [server] if stalled else [client, server]
                readable, _, _ = select.select(wanted, [], [], 0.1)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    other[source].sendall(data)
                    if source is client:
                        sent += len(data)
                        if limit is not None and sent >= limit:
                            self.stalled.set()
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.closing.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
