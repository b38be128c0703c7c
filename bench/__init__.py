"""kit's benchmarks: every speed claim measured side by side against a baseline (`make bench`)."""
