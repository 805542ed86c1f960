"""Reliability and security tests (issue 6): faults, races, bad input, token attacks.

Run them alone with ``pytest -m reliability``.
"""
