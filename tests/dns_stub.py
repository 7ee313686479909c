"""A tiny authoritative DNS server on 127.0.0.1 for tests: what Docker's embedded DNS does.

Docker answers a compose service name with the address of every running replica; nginx in
docker/nginx.conf asks it again (``resolver``) when its cached answer expires. ``StubDNS``
answers A queries for the names in ``records`` (a dict the test changes while it runs) and
NXDOMAIN for anything else, over UDP, from one thread. RFC 1035 wire format, queries with one
question only (what nginx sends).
"""

from __future__ import annotations

import socket
import struct
import threading


def _question(packet: bytes) -> tuple[str, int, int, int]:
    """(name, qtype, qclass, end offset) of the first question."""
    labels, i = [], 12
    while packet[i]:
        n = packet[i]
        labels.append(packet[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, qclass = struct.unpack("!HH", packet[i + 1 : i + 5])
    return ".".join(labels).lower(), qtype, qclass, i + 5


class StubDNS:
    def __init__(self, records: dict[str, list[str]] | None = None, ttl: int = 1):
        self.records = records if records is not None else {}
        self.ttl = ttl
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True, name="stub-dns")
        self.thread.start()

    def answer(self, packet: bytes) -> bytes:
        qid, _flags = struct.unpack("!HH", packet[:4])
        name, qtype, qclass, end = _question(packet)
        addresses = list(self.records.get(name, ())) if qtype == 1 and qclass == 1 else []
        known = name in self.records
        # QR=1, AA=1, RD copied as 0, RCODE 0 (or 3: NXDOMAIN for names we do not know)
        flags = 0x8400 | (0 if known else 3)
        header = struct.pack("!HHHHHH", qid, flags, 1, len(addresses), 0, 0)
        answers = b"".join(
            struct.pack("!HHHIH", 0xC00C, 1, 1, self.ttl, 4) + socket.inet_aton(a)
            for a in addresses
        )
        return header + packet[12:end] + answers

    def _serve(self) -> None:
        while self.running:
            try:
                packet, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self.answer(packet)
            except (IndexError, struct.error):
                continue  # not a query we understand: no answer, as a real server may do
            self.queries += 1
            self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()
