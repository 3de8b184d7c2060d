"""`make bench`: our speed, measured side by side with ceilings in one run (see run.py)."""
