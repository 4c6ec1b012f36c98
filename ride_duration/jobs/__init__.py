"""Offline jobs behind ``python -m ride_duration`` and ``train.py``: TLC data, training, batch scoring."""
