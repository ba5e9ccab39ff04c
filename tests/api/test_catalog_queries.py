"""The catalog through GraphQL over HTTP: connections, filters, global IDs, typed errors."""

from __future__ import annotations

from tests.api.helpers import add_skus, codes, gql

PAGE = """
query Page($first: Int, $after: String, $filter: SkuFilter) {
  skus(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id name gpuModel gpuCount region status
                          hourlyPrice { amountMinor currency exponent amount } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def test_pages_walk_the_catalog_with_cursors(client, uow) -> None:
    await add_skus(uow, 7)
    names: list[str] = []
    after = None
    while True:
        result = await gql(client, PAGE, {"first": 3, "after": after})
        conn = result["data"]["skus"]
        names += [e["node"]["name"] for e in conn["edges"]]
        assert conn["pageInfo"]["endCursor"] == conn["edges"][-1]["cursor"]
        assert conn["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert names == [f"sku-{i:03d}" for i in range(7)]


async def test_money_is_integer_minor_units_with_currency(client, uow) -> None:
    await add_skus(uow, 1)
    node = (await gql(client, PAGE, {"first": 1}))["data"]["skus"]["edges"][0]["node"]
    assert node["hourlyPrice"] == {
        "amountMinor": 100,
        "currency": "USD",
        "exponent": 2,
        "amount": "1.00",
    }


async def test_filter_by_gpu_model_and_region(client, uow) -> None:
    await add_skus(uow, 2, name="h1", gpu_model="H100", region="us-east")
    await add_skus(uow, 3, name="h2", gpu_model="H200", region="eu-west")
    await add_skus(uow, 1, name="h2us", gpu_model="H200", region="us-east")
    result = await gql(client, PAGE, {"filter": {"gpuModel": "h200", "region": "us-east"}})
    assert [e["node"]["name"] for e in result["data"]["skus"]["edges"]] == ["h2us-0"]
    result = await gql(client, PAGE, {"filter": {"gpuModel": "H100"}})
    assert {e["node"]["gpuModel"] for e in result["data"]["skus"]["edges"]} == {"H100"}


async def test_sku_and_node_by_global_id(client, uow) -> None:
    await add_skus(uow, 2)
    first = (await gql(client, PAGE, {"first": 1}))["data"]["skus"]["edges"][0]["node"]
    by_sku = await gql(client, "query($id: ID!) { sku(id: $id) { id name } }", {"id": first["id"]})
    assert by_sku["data"]["sku"] == {"id": first["id"], "name": first["name"]}
    by_node = await gql(
        client,
        "query($id: ID!) { node(id: $id) { __typename id ... on Sku { name } } }",
        {"id": first["id"]},
    )
    assert by_node["data"]["node"] == {
        "__typename": "Sku",
        "id": first["id"],
        "name": first["name"],
    }


async def test_unknown_but_well_formed_id_is_null(client) -> None:
    from schema.relay import to_global_id

    result = await gql(
        client, "query($id: ID!) { sku(id: $id) { id } }", {"id": to_global_id("Sku", 999)}
    )
    assert result == {"data": {"sku": None}}


async def test_bad_arguments_are_typed_errors(client, uow) -> None:
    await add_skus(uow, 1)
    assert codes(await gql(client, PAGE, {"first": 101})) == ["INVALID_PAGE_SIZE"]
    assert codes(await gql(client, PAGE, {"first": -1})) == ["INVALID_PAGE_SIZE"]
    assert codes(await gql(client, PAGE, {"after": "not-a-cursor"})) == ["INVALID_CURSOR"]
    garbage = await gql(client, '{ sku(id: "%%%") { id } }')
    assert codes(garbage) == ["INVALID_ID"]
    assert garbage["errors"][0]["extensions"]["field"] == "id"
    from schema.relay import to_global_id

    wrong_type = await gql(
        client, "query($id: ID!) { sku(id: $id) { id } }", {"id": to_global_id("User", 1)}
    )
    assert codes(wrong_type) == ["INVALID_ID"]


async def test_retired_skus_are_hidden_unless_asked_for(client, uow) -> None:
    from domain.catalog import services

    made = await add_skus(uow, 2)
    await services.retire_sku(uow(), made[0].id)
    active = await gql(client, PAGE)
    assert [e["node"]["name"] for e in active["data"]["skus"]["edges"]] == ["sku-001"]
    everything = await gql(client, PAGE, {"filter": {"status": None}})
    statuses = [e["node"]["status"] for e in everything["data"]["skus"]["edges"]]
    assert statuses == ["RETIRED", "ACTIVE"]


async def test_introspection_describes_the_node_interface(client) -> None:
    result = await gql(client, '{ __type(name: "Sku") { interfaces { name } fields { name } } }')
    sku_type = result["data"]["__type"]
    assert sku_type["interfaces"] == [{"name": "Node"}]
    fields = {f["name"] for f in sku_type["fields"]}
    assert {"id", "gpuModel", "hourlyPrice"} <= fields
    assert not {"color", "colour", "badge", "icon"} & fields  # no presentation fields
