"""A port for a test's gloo rendezvous that nothing else on the machine will take meanwhile.

Why: a port the kernel hands out for ``bind(0)`` is an ephemeral one, and between this test
closing it and rank 0 binding it again, a gloo pair of another test running beside it (pytest
-n) may be given the same ephemeral port. Below the kernel's ephemeral range no such reuse
happens; two tests drawing the same port at once is a 1-in-10,000 chance, not a race.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000  # below Linux's ephemeral range (32768-60999 by default)


def free_port() -> int:
    draw = random.SystemRandom()  # not the test's seeded RNG: xdist workers draw apart
    for _ in range(100):
        port = draw.randrange(_LOW, _HIGH)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_LOW}-{_HIGH}")
