"""Whole-run tools over the rest: the demo (`pig demo`) and stage-file inspection (`pig inspect`)."""
