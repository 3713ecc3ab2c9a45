"""Benchmarks: composition on top of the product packages (they import stream, training, deploy;
nothing imports them). Each prints its figures; docs/benchmarks.md records them."""
