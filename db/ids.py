"""New row ids: random (version 4) UUIDs, from the operating system's random source read in blocks.

`uuid.uuid4()` reads 16 bytes with one `os.urandom` call, and that call lets go of the GIL. A batch makes ids by
the thousand in a booking thread while the event loop and the other partitions' threads want the GIL too, so each
id handed the GIL away and then waited (up to the 5 ms switch interval) to get it back: a fifth of a booking
thread's time. One read of 4 KiB per 256 ids leaves that to once in 256. The bytes are the same as uuid4's (the
kernel's CSPRNG); each thread reads its own block, so no lock is needed.
"""

import os
import threading
import uuid

_PER_READ = 256
_local = threading.local()


def new_id() -> uuid.UUID:
    pool = getattr(_local, "pool", None)
    if not pool:
        block = os.urandom(16 * _PER_READ)
        pool = _local.pool = [block[i:i + 16] for i in range(0, len(block), 16)]
    return uuid.UUID(bytes=pool.pop(), version=4)
