"""The key's balance: New API's billing answers parsed, `KlingClient.balance`, the simulator's accounting."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from hostile import HostileServer, answer, response
from kling_widgets import AuthenticationError, KlingClient, PermissionDeniedError, ServerError
from kling_widgets._billing import UNLIMITED, Balance, parse_balance
from kling_widgets.simulator import GatewaySimulator


def subscription(amount: float, access_until: int = 0) -> dict[str, object]:
    return {
        "object": "billing_subscription", "has_payment_method": True, "soft_limit_usd": amount,
        "hard_limit_usd": amount, "system_hard_limit_usd": amount, "access_until": access_until,
    }  # fmt: skip


def test_the_two_answers_give_what_is_left() -> None:
    balance = parse_balance(subscription(20.0), {"object": "list", "total_usage": 50.0})
    assert balance == Balance(total=20.0, used=0.5)
    assert balance.remaining == 19.5
    assert balance.describe() == "Balance: 19.50 left of 20.00 (0.50 used)"


def test_an_unlimited_key_and_an_expiring_one() -> None:
    unlimited = parse_balance(subscription(UNLIMITED), {"total_usage": 1234.0})
    assert unlimited is not None
    assert (unlimited.total, unlimited.remaining, unlimited.used) == (None, None, 12.34)
    assert unlimited.describe() == "Balance: no limit (12.34 used)"
    expiring = parse_balance(subscription(5.0, access_until=1798761600), {"total_usage": 0})
    assert expiring is not None
    assert expiring.expires_at == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert expiring.describe().endswith("· key expires 01 Jan 2027")


def test_overspent_is_zero_left() -> None:
    balance = parse_balance(subscription(1.0), {"total_usage": 150})
    assert balance is not None
    assert balance.remaining == 0.0


@pytest.mark.parametrize(
    ("sub", "usage"),
    [
        # New API answers a failure with HTTP 200 and an error object (controller/billing.go).
        ({"error": {"message": "record not found", "type": "upstream_error"}}, {"total_usage": 0}),
        (subscription(1.0), {"error": {"message": "record not found", "type": "new_api_error"}}),
        ({"object": "billing_subscription"}, {"total_usage": 0}),
        (subscription(1.0), {"total_usage": "12"}),
        (subscription(float("nan")), {"total_usage": 0}),
        (subscription(-1.0), {"total_usage": 0}),
        ({**subscription(1.0), "hard_limit_usd": True}, {"total_usage": 0}),
    ],
)
def test_an_error_or_another_shape_is_no_balance(sub: dict[str, object], usage: dict[str, object]) -> None:
    assert parse_balance(sub, usage) is None


def test_the_simulator_reports_and_spends_the_balance(sim: GatewaySimulator, client: KlingClient) -> None:
    sim.balance, sim.task_price = 2.0, 0.75
    assert client.balance() == Balance(total=2.0, used=0.0)
    client.text2video("a corgi")
    client.text2video("a corgi again")
    balance = client.balance()
    assert balance == Balance(total=2.0, used=1.5)
    assert balance is not None
    assert balance.remaining == 0.5
    with pytest.raises(PermissionDeniedError, match="quota is used up") as refused:
        client.text2video("one too many")
    assert refused.value.code == "quota_not_enough"
    assert client.balance() == Balance(total=2.0, used=1.5)  # a refused POST costs nothing
    paths = [r.path for r in sim.requests() if r.path.startswith("/v1/dashboard/billing/")]
    assert sorted(paths) == 3 * ["/v1/dashboard/billing/subscription"] + 3 * ["/v1/dashboard/billing/usage"]


def test_a_gateway_without_billing_endpoints_has_no_balance(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    sim.balance = None
    assert client.balance() is None
    assert client.text2video("a corgi").task_id  # and nothing stops a submission
    assert [r.status for r in sim.requests() if r.path.startswith("/v1/dashboard")] == [404]


def test_an_error_object_in_a_200_answer_is_no_balance() -> None:
    body = json.dumps({"error": {"message": "record not found", "type": "upstream_error"}}).encode()
    with HostileServer(answer(response(body))) as server, KlingClient("k", base_url=server.url) as client:
        assert client.balance() is None


def test_a_rejected_key_or_a_server_error_raises(sim: GatewaySimulator) -> None:
    with KlingClient("sk-wrong", base_url=sim.url) as client, pytest.raises(AuthenticationError):
        client.balance()
    body = json.dumps({"error": {"message": "busy", "type": "new_api_error"}}).encode()
    with (
        HostileServer(answer(response(body, "502 Bad Gateway"))) as server,
        KlingClient("k", base_url=server.url) as client,
        pytest.raises(ServerError),
    ):
        client.balance()
