"""Input/output: atomic writes, image decoding, the competition data layout and slide readers."""
