"""The deterministic simulator (docs/simulator.md): ``World`` (world.py) steps real agents,
leader electors and controllers on a ``VirtualClock`` (clock.py), over fake hosts and an
in-memory store reached per process (store.py), checking the invariants (invariants.py)
every tick. ``cluster.py`` keeps the record-only helpers the benchmarks use."""
