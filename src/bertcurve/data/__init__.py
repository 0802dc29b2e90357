"""Corpora to data directories: readers (``corpus``), cleaning and sentence splitting
(``cleaning``), the character vocabulary (``vocab``) and the data-dir reader (``datadir``)."""
