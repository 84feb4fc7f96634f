"""The runtime every participant shares: inbox, tombstones, replies."""
