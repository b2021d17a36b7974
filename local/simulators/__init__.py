"""Loopback simulators of the HappyHorse provider routes, one module per route.

Each speaks its route's wire format, so the pipeline (and a user's own integration)
runs end to end offline. Run one on its own, e.g. `python -m local.simulators.magnific`.
"""
