"""The load generator against a real local HTTP server: what it sends and counts."""

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from perf import loadgen


@pytest.fixture
def server():
    received: Counter = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                received[body] += 1
            status = 500 if body == b"bad" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], received
    httpd.shutdown()
    httpd.server_close()


def test_a_replay_sends_every_body_once(server):
    port, received = server
    bodies = [f"q{i}".encode() for i in range(300)]
    result = loadgen.closed_loop("127.0.0.1", port, "/x", bodies, 8, 60, warmup_s=0, once=True)
    assert received == Counter(bodies)
    assert result.requests == 300 and result.errors == 0 and result.throughput > 0


def test_a_timed_run_cycles_the_bodies_and_counts_errors(server):
    port, received = server
    result = loadgen.closed_loop("127.0.0.1", port, "/x", [b"ok", b"bad"], 2, 0.5, warmup_s=0)
    assert received[b"ok"] > 1 and received[b"bad"] > 1
    assert result.errors > 0 and result.requests > 0
