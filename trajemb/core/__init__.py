"""Safety and I/O under everything: expected errors, range checks and config fields, atomic writes and what
trajemb may replace, signals, paths, JSON, content hashes, worker pools, devices."""
