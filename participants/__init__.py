"""Example participants of the order saga, and the kit they are built with."""
