"""Learning curves of any training: log readers (``logs``), statistics (``stats``), curve fits
and forecasts (``fits``), and the one home of every learning-curve decision (``policy``).

The bottom floor: nothing here imports torch or any other bertcurve subpackage.
"""
