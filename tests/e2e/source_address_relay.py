"""A byte-for-byte TCP relay whose connections to the server come from
another loopback address (127.0.0.2, ...), so that one test process can be
two peers to the server: gRPC picks the source address itself, and Linux
routes all of 127.0.0.0/8 to loopback. Nothing is parsed or changed."""
from __future__ import annotations

import socket
import threading

from server_process import free_port


class SourceAddressRelay:
    def __init__(self, upstream_port: int, source_ip: str, upstream_ip: str = "127.0.0.1"):
        self.upstream = (upstream_ip, upstream_port)
        self.source_ip = source_ip
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self._sockets = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> "SourceAddressRelay":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind((self.source_ip, 0))
            try:
                server.connect(self.upstream)
            except OSError:
                client.close()
                server.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "SourceAddressRelay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
