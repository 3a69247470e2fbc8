"""Networks of ResShift, written from the specification with the official parameter names."""
