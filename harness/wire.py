"""Counts what the service sends to PostgreSQL, on the wire, per request.

A small TCP proxy sits between gunicorn and PostgreSQL and reads the frontend protocol.
A simple Query ('Q') or an extended-protocol Sync ('S') is where the client stops and
waits for ReadyForQuery, so each one is exactly one round trip. Nothing in the service is
instrumented: what is counted is what crossed the socket.
"""

import socket
import struct
import threading
from collections import Counter
from urllib.parse import quote

from psycopg2.extensions import parse_dsn

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
ROUND_TRIP_MESSAGES = {b"Q", b"S"}


class WireCounter:
    """A proxy to the server in `database_url`; count() gives the totals so far."""

    def __init__(self, database_url: str) -> None:
        self.params = parse_dsn(database_url)
        self.lock = threading.Lock()
        self.statements: Counter[str] = Counter()
        self.round_trips = 0
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def dsn(self) -> str:
        """A libpq URL that reaches the same database through the proxy."""
        user = quote(self.params.get("user", "postgres"), safe="")
        password = self.params.get("password")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        database = quote(self.params.get("dbname", "postgres"), safe="")
        return (
            f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"
            "?sslmode=disable&gssencmode=disable"
        )

    def count(self) -> tuple[int, int, Counter[str]]:
        """(round trips, connections opened, statements by their first words) so far."""
        with self.lock:
            return self.round_trips, self.connections, Counter(self.statements)

    def close(self) -> None:
        self.listener.close()

    def _upstream(self) -> socket.socket:
        host = self.params.get("host", "127.0.0.1").split(",")[0]
        port = int(self.params.get("port", "5432"))
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(f"{host}/.s.PGSQL.{port}")
            return sock
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = self._upstream()
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._frontend, args=(client, server), daemon=True).start()
            threading.Thread(target=_pipe, args=(server, client), daemon=True).start()

    def _frontend(self, client: socket.socket, server: socket.socket) -> None:
        """Forward client -> server, reading message boundaries as they pass."""
        buffer = b""
        started = False
        try:
            while data := client.recv(65536):
                buffer += data
                while True:
                    if not started:
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!ii", buffer[:8])
                        if len(buffer) < length:
                            break
                        buffer = buffer[length:]
                        started = code not in (SSL_REQUEST, GSSENC_REQUEST)
                        continue
                    if len(buffer) < 5:
                        break
                    kind, length = buffer[:1], struct.unpack("!i", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    self._record(kind, buffer[5 : 1 + length])
                    buffer = buffer[1 + length :]
                # Counted before it is sent, so a reply can never overtake its count.
                server.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    def _record(self, kind: bytes, payload: bytes) -> None:
        with self.lock:
            if kind in ROUND_TRIP_MESSAGES:
                self.round_trips += 1
            if kind == b"Q":
                text = " ".join(payload.rstrip(b"\0").decode(errors="replace").split())
                # Named by the last statement of the query string: the app sends each one
                # behind its "SET LOCAL statement_timeout = …;" in the same message.
                last = text.rstrip("; ").split(";")[-1].strip()
                self.statements[last.split("(")[0][:60]] += 1


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        source.close()
        target.close()
