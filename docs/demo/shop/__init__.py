"""A toy shop: prices and stock."""
