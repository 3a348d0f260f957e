"""Fargate's rules as pure functions: sizing, node naming and shape, quantities.

No I/O here: everything takes and returns plain values, and is tested with them.
"""
