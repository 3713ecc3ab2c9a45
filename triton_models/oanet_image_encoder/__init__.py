"""Triton model `oanet_image_encoder`: the TorchScript CNN, served by libtorch (NGC container)
or by the Python-backend runner `model.py` in this folder (the pip-installed Triton)."""
