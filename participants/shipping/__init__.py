"""Shipping: creates a shipment and cancels it."""
