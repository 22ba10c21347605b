"""Benchmarks: `voice-bridge bench` (load.py) and the component benchmarks, each runnable as `python -m bridge.sim.bench.NAME`."""
