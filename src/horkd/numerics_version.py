"""The version of training's numbers: what a recorded run's scores depend on in the code.

A study record is reused on a fresh clone because equal settings give equal numbers; that holds
only while the code trains the same way. Every record carries the ``NUMERICS_VERSION`` of the code
that measured it, and the study page marks a row measured by an older version.

**When to move it.** ``tests/test_numerics_canary.py`` trains a tiny run on one thread and
compares its numbers with pinned ones (``tests/fixtures/numerics_canary.json``). When a change
moves them (a loss, an initialisation, the data order, an optimiser step), the test fails until
both are moved together: add one to ``NUMERICS_VERSION`` and re-pin with
``python tests/test_numerics_canary.py --pin``. A change that leaves the canary's numbers as they
were (a refactor, a message, a new method) moves nothing. Records of older versions then show as
such on the page until ``horkd study`` re-records them (``--only REGIME`` for one regime).
"""

from __future__ import annotations

#: Version 1: the numerics of every run recorded up to and including the hint-based FitNet.
NUMERICS_VERSION = 1
