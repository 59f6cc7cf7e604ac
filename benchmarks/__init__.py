"""Benchmarks (``make bench``, ``python -m benchmarks``): each of our paths timed against its
obvious alternative in the same process, on the same model and data, reported as
``ratio = alternative time / our time`` (bigger is better) in a table and in ``bench.json``.

Not part of the ``captioning`` package (the wheel does not ship it). The models come from the
installed config tree (``captioning.CONFIG_DIR``), composed as ``captioning.train`` composes
them; the settings are ``bench.yaml`` beside this file.
"""

from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent)  # bench.yaml
