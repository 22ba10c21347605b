"""Tools around the bridge: the simulated caller, benchmarks, the naive baseline, the demo.

Never imported by production code.
"""
