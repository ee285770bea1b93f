"""Recommendation tracking: exposures written to the stream, and engagement streamed to a Personalize event tracker."""
