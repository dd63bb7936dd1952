"""What a bundle tells: reading bundles, evaluation and its report, mining (uniqueness, near-duplicates,
sketches, exports), forecasting by retrieval, and the realism of synthetic data."""
