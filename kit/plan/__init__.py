"""`kit plan`: each step's images and estimated seconds, from a short timed probe on this machine."""
