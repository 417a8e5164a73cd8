#!/usr/bin/env python3
"""spec/support/multiport.py: many scrape targets, one port each.

Sharding is decided by hashmod on __address__, so a test of it needs
targets whose addresses differ: this serves N ports on 127.0.0.1 from one
process (asyncio, standard library only) and exits by itself after
--lifetime seconds.

    multiport.py --count N [--ready FILE] [--lifetime S]

Once listening it writes "PORTS p1,p2,... PID <pid>" to --ready (or
stdout). Every port answers any GET with text 0.0.4:

    # TYPE shard_target gauge
    shard_target{port="<port>"} <port>
"""
import argparse
import asyncio
import os
import sys


async def handle(reader, writer, port):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            body = ('# TYPE shard_target gauge\nshard_target{port="%d"} %d\n'
                    % (port, port)).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; "
                         b"version=0.0.4\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(args):
    servers = []
    for _ in range(args.count):
        cell = {}
        srv = await asyncio.start_server(
            lambda r, w, c=cell: handle(r, w, c["port"]), "127.0.0.1", 0)
        cell["port"] = srv.sockets[0].getsockname()[1]
        servers.append((cell["port"], srv))
    line = "PORTS %s PID %d\n" % (",".join(str(p) for p, _ in servers),
                                  os.getpid())
    if args.ready:
        with open(args.ready + ".tmp", "w") as f:
            f.write(line)
        os.rename(args.ready + ".tmp", args.ready)
    else:
        sys.stdout.write(line)
        sys.stdout.flush()
    await asyncio.sleep(args.lifetime)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--ready")
    ap.add_argument("--lifetime", type=float, default=600)
    asyncio.run(main(ap.parse_args()))
