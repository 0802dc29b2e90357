"""One module per stage or verb: each defines the documented function, `add_arguments` and `run`.

Import the functions from the package (`bertcurve.prepare(...)`); import the modules from
here (`bertcurve.stages.prepare`) for their other names.
"""
