"""Inventory: reserves stock per SKU and releases it."""
