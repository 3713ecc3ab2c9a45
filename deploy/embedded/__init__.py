"""The embedded stack: a Kafka-wire broker (Tansu) and NVIDIA Triton, both from PyPI wheels."""
