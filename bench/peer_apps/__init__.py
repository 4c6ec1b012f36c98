"""The servers users would pick instead of this service, serving the same model (bench/peers.py)."""
