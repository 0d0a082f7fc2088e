"""kumo server: the REST API, leader election and the controllers (composition root)."""
