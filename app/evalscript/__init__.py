"""Sentinel Hub evalscripts (V3): parsed, translated to numpy where possible, else run in V8.

No FastAPI here: errors are ``app.errors`` classes carrying their HTTP status.
"""
