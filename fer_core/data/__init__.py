"""Data: dataset formats, ingest, image decoding, the torch Dataset and transforms."""
