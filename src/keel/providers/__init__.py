"""Provider dialects behind the `Provider` protocol; `registry` is the one name -> class table."""
