"""Hotel: books a room and cancels it."""
