"""Stock levels by SKU."""


class OutOfStock(Exception):
    pass


class Inventory:
    def __init__(self) -> None:
        self._stock: dict[str, int] = {}

    def add(self, sku: str, count: int) -> None:
        if count <= 0:
            raise ValueError("add a positive count")
        self._stock[sku] = self._stock.get(sku, 0) + count

    def remove(self, sku: str, count: int) -> None:
        if self.count(sku) < count:
            raise OutOfStock(f"{sku}: {self.count(sku)} in stock, {count} wanted")
        self._stock[sku] -= count

    def count(self, sku: str) -> int:
        return self._stock.get(sku, 0)
