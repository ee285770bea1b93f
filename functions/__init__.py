"""Lambda code for engagement-loop, packaged as one archive."""
