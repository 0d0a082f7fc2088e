"""Simulated cluster parts: hosts that exist only as records in the store, for tests and
benchmarks of the control plane (the scenario simulator will grow here)."""
