"""Sotto's Lambda handlers (the imperative shell) and their domain logic.

Layout: ``handlers/`` holds one thin module per route; ``logic/`` holds the
domain rules; ``dal/`` holds one storage class per table; ``aws.py`` creates
boto3 clients once, lazily, from the environment.
"""
