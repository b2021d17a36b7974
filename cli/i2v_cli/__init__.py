"""The `i2v` command: see, steer and feed a deployed or local HappyHorse pipeline."""
