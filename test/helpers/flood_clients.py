"""Hostile load for test/integration/memory.test.ts, run as a child process so that its buffers do not
count in the RSS of the postern under test: clients that send a command in a loop and never read the
replies. Each socket gets a tiny receive buffer (SO_RCVBUF before connect), so the kernel absorbs only
a few KB of replies and what postern holds is what it decides to hold. Each client writes as fast as
the socket takes it for durationMs from the moment it is connected (TLS: handshake done), unless
postern ends the connection first; then it stays connected, still not reading. Everything stops
graceMs after the last client stopped sending (or at capMs), and the clients report.

argv[1]: JSON {"durationMs", "graceMs", "capMs", "groups": [{"port", "tls", "count", "command"}]}
stdout: one JSON line {"clients": [{"group", "sent", "closedByServerAfterMs" (null: never)}]}
"""
import json
import select
import socket
import ssl
import sys
import time

spec = json.loads(sys.argv[1])
start = time.monotonic()
ms = lambda: int((time.monotonic() - start) * 1000)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

clients = []
for gi, g in enumerate(spec["groups"]):
    for _ in range(g["count"]):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", g["port"]))
        raw.setblocking(False)
        fd = raw.fileno()  # before wrapping: wrap_socket detaches raw
        s = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) if g["tls"] else raw
        clients.append({"group": gi, "sock": s, "fd": fd, "tls": g["tls"], "handshaken": not g["tls"],
                        "chunk": g["command"].encode() * 256, "sent": 0, "closed": None, "done": False,
                        "until": None if g["tls"] else ms() + spec["durationMs"]})

poll = select.poll()
byfd = {}
for c in clients:
    byfd[c["fd"]] = c
    poll.register(c["fd"], select.POLLOUT | select.POLLRDHUP | (select.POLLIN if c["tls"] else 0))

def finish(c, by_server):
    if c["done"]:
        return
    c["done"] = True
    if by_server:
        c["closed"] = ms()
    try:
        poll.unregister(c["fd"])
    except KeyError:
        pass
    try:
        c["sock"].close()
    except OSError:
        pass

cap = spec.get("capMs", 120000)

def sending(c):
    return c["until"] is not None and ms() < c["until"]

def stop_at():
    # graceMs after the last client stopped sending (handshakes still pending: not yet known)
    if any(c["until"] is None and not c["done"] for c in clients):
        return cap
    return min(cap, max([c["until"] for c in clients if c["until"] is not None] + [0]) + spec["graceMs"])

while any(not c["done"] for c in clients) and ms() < stop_at():
    for c in clients:
        if not c["done"] and c["handshaken"] and not c.get("quiet") and not sending(c):
            c["quiet"] = True
            poll.modify(c["fd"], select.POLLRDHUP)
    for fd, ev in poll.poll(100):
        c = byfd[fd]
        if c["done"]:
            continue
        if ev & (select.POLLERR | select.POLLHUP | select.POLLRDHUP):
            finish(c, True)
            continue
        try:
            if not c["handshaken"]:
                c["sock"].do_handshake()
                c["handshaken"] = True
                c["until"] = ms() + spec["durationMs"]
                # from now on never read: only writability and hang-up matter
                poll.modify(fd, select.POLLOUT | select.POLLRDHUP)
                continue
            if not sending(c):
                continue
            while True:
                n = c["sock"].send(c["chunk"])
                c["sent"] += n
                if n < len(c["chunk"]):
                    break
        except ssl.SSLWantReadError:
            if not c["handshaken"]:
                poll.modify(fd, select.POLLIN | select.POLLRDHUP)
        except ssl.SSLWantWriteError:
            if not c["handshaken"]:
                poll.modify(fd, select.POLLOUT | select.POLLRDHUP)
        except (BlockingIOError, InterruptedError):
            pass
        except (OSError, ssl.SSLError):
            finish(c, True)

for c in clients:
    finish(c, False)
print(json.dumps({"clients": [{"group": c["group"], "sent": c["sent"], "closedByServerAfterMs": c["closed"]} for c in clients]}))
