"""Readers that turn AV2 files into dense ``TrackSet``s, and the reduced map geometry."""
