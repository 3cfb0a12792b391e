"""Dataset tooling beside the plugin: the ``smartcash-ultra`` command (check, stats, convert) and the sample data."""
