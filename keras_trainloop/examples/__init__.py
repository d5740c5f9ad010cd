"""Runnable examples: `python -m keras_trainloop.examples.digits --help`."""
