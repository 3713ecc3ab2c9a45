"""Encoded images for decode and dead-letter tests: valid, truncated, corrupt, bombs, odd colours.

The chaos bench's bad frames are made of the same ones: they are defined there, once."""

from __future__ import annotations

from bench.chaos_frames import cmyk_jpeg, jpeg, noise, png, png_bomb, png_with_corrupt_data

__all__ = ["cmyk_jpeg", "jpeg", "noise", "png", "png_bomb", "png_with_corrupt_data"]
