"""Payment: charges a card and refunds the charge."""
