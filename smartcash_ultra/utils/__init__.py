"""The lowest layer: the 17-class scheme, the ``smartcash:`` settings, atomic writes. Imports nothing above it."""
