"""Sotto's protocol and crypto core: pure, sans-I/O.

This package imports only the standard library and ``cryptography``; the
client, the Lambda handlers and the local gateway are adapters around it.
"""
