"""Real servers the tests start: where their programs come from."""
