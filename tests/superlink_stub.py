"""A SuperLink that fails every API request with a 500, as Flower's does when its SQLite
write lock is held past the 5 s busy timeout ("database is locked"); /health answers.
TLS with the SuperLink's own certificate, on its port, so the gateway proxies to it as
it would to the real one (tests/test_gateway_upstream.py)."""

import http.server
import ssl


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        code, body = (200, b"{}") if self.path == "/health" else (500, b'{"detail":"Internal server error."}')
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args) -> None:
        pass


server = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/certs/server/superlink.crt", "/certs/server/superlink.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
