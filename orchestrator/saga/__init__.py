"""The pure core: messages, definitions, state machines and decisions. No I/O here."""
