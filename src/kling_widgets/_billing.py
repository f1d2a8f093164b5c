"""What the API key has left, from the gateway's OpenAI-compatible billing answers.

New API (and so EZmodel) answers two token-authenticated GETs (docs/studio.md, "The balance line"):

- ``/v1/dashboard/billing/subscription``: ``{"object": "billing_subscription", "has_payment_method": true,
  "soft_limit_usd": q, "hard_limit_usd": q, "system_hard_limit_usd": q, "access_until": t}`` where ``q`` is
  the key's whole quota (used plus remaining), ``100000000`` for an unlimited key, and ``t`` the key's expiry
  (Unix seconds, 0 for never);
- ``/v1/dashboard/billing/usage``: ``{"object": "list", "total_usage": u}``, what was used, in hundredths.

Both amounts are in the gateway's display unit (US dollars unless the operator chose CNY or tokens). A
failure is an HTTP **200** carrying ``{"error": {...}}``, so the body, not the status, says whether the
gateway answered. Pure: no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["SUBSCRIPTION_PATH", "UNLIMITED", "USAGE_PATH", "Balance", "parse_balance"]

SUBSCRIPTION_PATH = "/v1/dashboard/billing/subscription"
USAGE_PATH = "/v1/dashboard/billing/usage"
#: The amount New API reports for a key with unlimited quota.
UNLIMITED = 100_000_000.0


@dataclass(frozen=True)
class Balance:
    """What an API key may still spend, as the gateway reports it.

    Attributes
    ----------
    total : float or None
        The key's whole quota (used plus remaining), in the gateway's display unit (US dollars by
        default); None for a key without a limit.
    used : float
        What the key has used so far, in the same unit.
    expires_at : datetime or None
        When the key stops working (UTC), or None if it never expires.
    """

    total: float | None
    used: float
    expires_at: datetime | None = None

    @property
    def remaining(self) -> float | None:
        """What is left (never below 0), or None for a key without a limit."""
        return None if self.total is None else max(self.total - self.used, 0.0)

    def describe(self) -> str:
        """One short line, e.g. ``"Balance: 19.50 left of 20.00 (0.50 used)"``."""
        if self.remaining is None:
            line = f"Balance: no limit ({self.used:,.2f} used)"
        else:
            line = f"Balance: {self.remaining:,.2f} left of {self.total:,.2f} ({self.used:,.2f} used)"
        if self.expires_at is not None:
            line += f" · key expires {self.expires_at:%d %b %Y}"
        return line


def parse_balance(subscription: Mapping[str, object], usage: Mapping[str, object]) -> Balance | None:
    """The `Balance` in the two billing answers, or None if either is an error or not the expected shape."""
    total = _amount(subscription.get("hard_limit_usd"))
    hundredths = _amount(usage.get("total_usage"))
    if "error" in subscription or "error" in usage or total is None or hundredths is None:
        return None
    until = _amount(subscription.get("access_until"))
    expires_at = datetime.fromtimestamp(until, timezone.utc) if until and until < 2**33 else None
    # Rounded to a hundredth of a cent: the amounts are floats computed from integer quota units.
    used = round(hundredths / 100, 6)
    return Balance(None if total >= UNLIMITED else round(total, 6), used, expires_at)


def _amount(value: object) -> float | None:
    """A finite, non-negative JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None
