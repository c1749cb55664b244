"""Adapters reach upstream tools; each translates its library's failures into broker errors."""
