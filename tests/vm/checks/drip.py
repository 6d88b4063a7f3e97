#!/usr/bin/env python3
"""A hostile Element release server for the drip scenario (loopback only, inside the guest).

It answers at once with a status line and headers (so connecting and the first read succeed), then sends the
body one byte every INTERVAL seconds: a server that never stalls long enough to look dead to a naive
client but would take days to finish. Content comes from the real fixtures under /srv/fixtures.

  drip.py list    PORT INTERVAL   the release list itself (releases/latest, releases/tags/X) drips
  drip.py tarball PORT INTERVAL   the list answers at once, pointing at this server's download/, which drips
"""
import http.server
import socketserver
import sys
import time

ROOT = "/srv/fixtures"
FIXTURES_URL = "http://127.0.0.1:8099/"


def main():
    mode, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    own_url = f"http://127.0.0.1:{port}/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0].lstrip("/")
            if ".." in path:
                self.send_error(400)
                return
            try:
                with open(f"{ROOT}/{path}", "rb") as f:
                    body = f.read()
            except OSError:
                self.send_error(404)
                return
            drip = mode == "list" or path.startswith("download/")
            if path.startswith("releases/"):
                body = body.replace(FIXTURES_URL.encode(), own_url.encode())
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not drip:
                self.wfile.write(body)
                return
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(interval)

        def log_message(self, fmt, *args):
            sys.stderr.write("drip: " + (fmt % args) + "\n")

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
