"""New row ids: random (version 4) UUIDs, from the operating system's random source read in blocks.

`uuid.uuid4()` reads 16 bytes with one `os.urandom` call, and that call lets go of the GIL. A batch makes ids by
the thousand in a booking thread while the event loop and the other partitions' threads want the GIL too, so each
id handed the GIL away and then waited (up to the 5 ms switch interval) to get it back: py-spy found a fifth of a
booking thread's time there. One read of 4 KiB per 256 ids leaves that to once in 256. The bytes are the same as
uuid4's (the kernel's CSPRNG); each thread reads its own block, so no lock is needed.
"""

import os
import threading
import uuid

_PER_READ = 256
_MARKS = 0xF000 << 64 | 0xC000 << 48  # where a UUID says its version (4 bits) and its variant (2 bits)
_VERSION_4 = 0x4000 << 64 | 0x8000 << 48  # version 4, the RFC 4122 variant
_local = threading.local()


def _block() -> list[int]:
    block = os.urandom(16 * _PER_READ)
    return [int.from_bytes(block[i:i + 16], "big") & ~_MARKS | _VERSION_4 for i in range(0, len(block), 16)]


def new_id() -> uuid.UUID:
    pool = getattr(_local, "pool", None)
    if not pool:
        pool = _local.pool = _block()
    # What uuid.UUID(int=...) makes, without its argument checks (the value is a version-4 UUID by construction):
    # they were a third of the cost of an id, and a batch makes four ids a fill.
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", pool.pop())
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made
