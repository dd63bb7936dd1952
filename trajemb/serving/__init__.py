"""Building and serving bundles: ``bundle_build``, completing a bundle in the background, what the explorer
shows (``explore``, shared by the CLI and the app), figures, the demo pipeline."""
