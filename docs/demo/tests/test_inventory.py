import pytest

from shop.inventory import Inventory, OutOfStock


@pytest.fixture
def inventory():
    stock = Inventory()
    stock.add("mug", 3)
    return stock


def test_add_and_count(inventory):
    inventory.add("mug", 2)
    assert inventory.count("mug") == 5


def test_remove(inventory):
    inventory.remove("mug", 3)
    assert inventory.count("mug") == 0


def test_remove_more_than_in_stock(inventory):
    with pytest.raises(OutOfStock):
        inventory.remove("mug", 4)


@pytest.mark.skip(reason="the warehouse sync is not written yet")
def test_sync_with_warehouse(inventory):
    raise NotImplementedError
