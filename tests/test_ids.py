"""Row ids drawn from blocks of the random source (db/ids.py) are version-4 UUIDs, never repeated across threads."""

import threading
import uuid

from db import ids


def test_new_ids_are_version_4_uuids_and_unique_across_threads_and_refills():
    made: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(mine: list[uuid.UUID]) -> None:
        mine.extend(ids.new_id() for _ in range(1000))  # several refills per thread

    threads = [threading.Thread(target=make, args=(mine,)) for mine in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for mine in made for i in mine]
    assert len(set(every)) == 4000
    assert {(i.version, i.variant) for i in every} == {(4, uuid.RFC_4122)}
