"""Streaming predictions: the Kafka consumer (``python -m ride_duration stream``) and the Kinesis
Lambda handler, sharing one message contract (:mod:`.records`) and the service's model machinery."""
