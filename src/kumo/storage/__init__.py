"""Storage pools and VM volumes."""
