"""gunicorn's threaded worker, with each request read whole before it takes a thread.

gunicorn's gthread worker hands a connection to a request thread as soon as its first bytes arrive, and
the thread then reads the rest with blocking reads and no deadline: a client that trickles a byte every
few seconds holds a thread for as long as it likes, and a few dozen such clients hold all of them
(`/healthz` included). Here the worker's event loop reads a request's headers and body itself,
non-blocking, and only a complete request reaches a thread; one that has not arrived within
`read_timeout` seconds is answered 408 and closed. A slow client then costs a socket and the bytes it
sent, never a thread. (The buffering a reverse proxy such as nginx does in front of an app server, in the
worker itself, so `synthgap serve` alone is safe too; compose.yaml puts nginx in front as well.)
"""

from __future__ import annotations

import errno
import re
import selectors
import time
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

MAX_HEAD = 64 * 1024  # request line and headers: beyond this, gunicorn's own limits answer (431/400)
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
EXPECT_CONTINUE = re.compile(rb"(?im)^expect:[ \t]*100-continue[ \t]*\r\n")
TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def request_arrived(buf: bytes | bytearray, max_body: int) -> bool:
    """Whether `buf` holds a whole HTTP/1.x request (headers, and a Content-Length or chunked body), or as
    much of one as a thread should wait for: a head too large or malformed, a body over `max_body` (the app
    answers those 413 without reading on), go to gunicorn's parser at once, which answers them."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return len(buf) > MAX_HEAD
    head = bytes(buf[:end]).lower()
    body = len(buf) - end - 4
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return True  # gunicorn answers 400
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
    if chunked:
        return _chunked_done(buf, end + 4, max_body)
    return length is None or length > max_body or body >= length


def _chunked_done(buf: bytes | bytearray, pos: int, max_body: int) -> bool:
    """Whether a chunked body from `pos` has ended (its last chunk and trailers), or is over max_body, or
    malformed (gunicorn answers)."""
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return len(buf) - pos > 1024  # a chunk-size line this long is malformed
        try:
            size = int(bytes(buf[pos:eol]).split(b";")[0].strip(), 16)
        except ValueError:
            return True
        if size == 0:  # the last chunk: then trailers, if any, and an empty line
            return buf.find(b"\r\n\r\n", eol) >= 0
        total += size
        if total > max_body:
            return True
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return False


class BufferingWorker(ThreadWorker):
    """gthread whose event loop reads each request whole (headers and body, within read_timeout) before a
    request thread sees it. Settings from the app's ServeConfig: `read_timeout`, `max_upload_bytes`."""

    read_timeout = 30.0
    max_body = 10 * 2**20

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reading: dict[TConn, float] = {}  # connection -> deadline for its request to arrive

    def accept(self, listener):
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._read_request(TConn(self.cfg, sock, client, listener.getsockname()))

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection's next request is arriving: read it whole first, too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        conn.arrived, conn.continued = bytearray(), False
        self.reading[conn] = time.monotonic() + self.read_timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

    def _on_bytes(self, conn: TConn, sock) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(conn)
            return
        conn.arrived += data
        if not request_arrived(conn.arrived, self.max_body):
            if not conn.continued and (end := conn.arrived.find(b"\r\n\r\n")) >= 0:
                # A client that sent `Expect: 100-continue` waits for this before its body (curl: a second).
                head = bytes(conn.arrived[: end + 2])
                if EXPECT_CONTINUE.search(head) and head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1"):
                    conn.continued = True
                    try:
                        sock.send(CONTINUE_RESPONSE)
                    except OSError:
                        pass
            return
        self.poller.unregister(sock)
        del self.reading[conn]
        arrived = bytes(conn.arrived)
        if conn.continued:  # answered here: the parser must not send a second 100 Continue
            end = arrived.find(b"\r\n\r\n")
            arrived = EXPECT_CONTINUE.sub(b"", arrived[: end + 2]) + arrived[end + 2 :]
        conn.arrived = None
        conn.init()  # the HTTP parser, on the now-blocking socket; its first bytes are those read here
        conn.parser.unreader.unread(arrived)
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn: TConn, answer: bytes = b"") -> None:
        self.reading.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if answer:
            try:
                conn.sock.send(answer)
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        """Each turn of the event loop (about once a second): requests not arrived by their deadline get 408."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, deadline in self.reading.items() if deadline <= now]:
            self._drop(conn, TIMEOUT_RESPONSE)

    def run(self):
        try:
            super().run()
        finally:
            for conn in list(self.reading):
                self._drop(conn)
