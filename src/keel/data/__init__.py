"""Data files shipped with Keel (the packaged price list), read through importlib.resources."""
