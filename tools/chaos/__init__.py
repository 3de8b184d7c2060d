"""A seeded, reproducible fault run on loopback (`make chaos`): a private PostgreSQL and JetStream, two `tiris
serve` replicas and two `tiris consume` processes under REST money operations and bot events, while processes are
killed and servers stopped; then the invariants. Parts: cluster.py (the processes), load.py (the two doors' load),
faults.py (the schedule and how each fault is done), invariants.py (the checks), run.py (the driver)."""
