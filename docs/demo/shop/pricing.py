"""Prices in cents, so that the arithmetic is exact."""

TAX_RATE = 0.20


def with_tax(net_cents: int) -> int:
    """The gross price of a net price."""
    return net_cents + round(net_cents * TAX_RATE)


def discount(price_cents: int, percent: int) -> int:
    """The price after a discount of ``percent`` per cent, rounded down to the cent."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a discount is between 0 and 100 per cent, not {percent}")
    return price_cents - price_cents * percent // 100


def format_price(cents: int) -> str:
    """``1999`` -> ``"19.99"``."""
    return f"{cents // 100}.{cents % 100:02d}"
