"""Flight: books a seat on a flight and cancels it."""
