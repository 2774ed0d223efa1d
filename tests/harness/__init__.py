"""Test harnesses: real peers (a pgstac STAC API) and small loopback stub servers."""
