#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time in each direction: a database "in another
machine" for the benchmarks, on a box where tc/netem is not available.

    python3 tests/bench/delayproxy.py LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS

Each chunk read from one side is written to the other DELAY_MS after it was read, in order; so
a round trip through the proxy takes 2 x DELAY_MS more than without it, whatever the chunking.
Bandwidth is not limited. Prints "ready" on stdout once it listens. Standard library only.

Two threads per connection and direction-queue (a reader and a writer that sleeps until each
chunk is due): time.sleep is precise to tens of microseconds, where an asyncio timer would round
a 0.5 ms delay up to the millisecond of epoll_wait. It costs CPU of its own (some tens of
microseconds per chunk), taken from everyone else on the benchmark's two cores.
"""
import queue
import socket
import sys
import threading
import time


def pump(src, dst, delay):
    q = queue.Queue()

    def writer():
        while True:
            due, data = q.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if data is None:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        q.put((time.monotonic() + delay, data or None))
        if not data:
            break
    t.join()


def serve(client, target, delay):
    try:
        server = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    a = threading.Thread(target=pump, args=(client, server, delay), daemon=True)
    a.start()
    pump(server, client, delay)
    a.join()
    client.close()
    server.close()


def main():
    listen_port, host, port, delay_ms = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                         float(sys.argv[4]))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(64)
    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, (host, port), delay_ms / 1000.0),
                         daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
