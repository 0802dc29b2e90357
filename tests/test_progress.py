"""Progress and time wording."""


def test_remaining_time_is_never_printed_as_zero_hours():
    from bertcurve.progress import more_time

    assert more_time(2.54) == "2.5 more hours"
    assert more_time(0.2) == "12 more minutes"
    assert more_time(0.0) == "less than a minute more"
