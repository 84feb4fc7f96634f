"""Car: rents a car and cancels the rental."""
