"""Placement: filters and weighers over hosts (pure; see tests/unit/test_scheduler.py)."""
