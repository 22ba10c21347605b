"""Benchmarks: `voice-bridge bench` (load.py) and the component benchmarks.

Each is runnable as `python -m bridge.sim.bench.NAME`.
"""
