"""Generator 1 of ``trajemb synth`` (up to trajemb 0.1.x), frozen: the scenarios it wrote are made
again bit for bit from the same seed, so that tables, bundles and checkpoints built on it can be
rebuilt and compared with the calibrated generator (``trajemb.data.synth.behaviour``)."""
