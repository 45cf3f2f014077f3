"""`store billing sync|sweep|orders|refund`: payments from the command line.

* ``sync``: every active paid tier has its current product and price at the gateway (Stripe
  Products and Plans; history rows for the test gateway). Old prices are never changed.
* ``sweep``: suspend entitlements whose payment grace ran out, expire ended subscriptions
  (and, with the test gateway, renew due ones). Run it from cron, e.g. every 15 minutes.
* ``reconcile [--since TIME]``: compare unpaid orders and running subscriptions with the
  gateway and fix them (a webhook that never came); run it from a timer
  (deploy/systemd/store-reconcile.timer).
* ``orders``: list recent orders. ``refund ORDER [--amount 12.50]``: full or partial refund.
* ``coupons ORG``, ``coupon-create ORG CODE --product REPO (--percent N | --amount N) ...``,
  ``coupon-deactivate ORG ID``: an organization's coupons, as on its Coupons page.

Billing settings come from the environment (STRIPE_SECRET_KEY, STRIPE_PUBLISHABLE_KEY,
STRIPE_WEBHOOK_SECRET, STRIPE_API_BASE, STORE_BILLING_*); see docs/payments.md.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from store.accounts import service as accounts
from store.billing import coupons, prices, reconcile, subscriptions
from store.billing import orders as order_service
from store.billing.config import BillingSettings
from store.billing.models import Coupon, Order
from store.billing.runtime import Billing, build_billing
from store.cli._common import (
    add_command,
    command,
    decimal_amount,
    emit,
    load_settings,
    positive_int,
    resolve_actor,
    table,
    to_minor,
    unit_of_work,
    uuid_arg,
)


def _billing() -> Billing:
    return build_billing(BillingSettings(), load_settings())


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "billing",
        help="payments: price sync, sweep, orders and refunds",
        description=(
            "Payments from the command line. sync puts every active paid tier's product and "
            "price at the gateway (old prices are never changed); sweep suspends entitlements "
            "whose payment grace ran out and expires ended subscriptions (run it from cron, "
            "e.g. every 15 minutes); orders lists recent orders; refund refunds one in full or "
            "in part. Billing settings come from the environment (STRIPE_SECRET_KEY, "
            "STRIPE_PUBLISHABLE_KEY, STRIPE_WEBHOOK_SECRET, STRIPE_API_BASE, STORE_BILLING_*); "
            "see docs/payments.md."
        ),
    )
    sub = parser.add_subparsers(dest="billing_command", metavar="ACTION", required=True)
    add_command(sub, "sync", _sync, help="create or update products and prices at the gateway")
    add_command(sub, "sweep", _sweep, help="suspend after grace, expire ended subscriptions")
    p = add_command(
        sub,
        "reconcile",
        _reconcile,
        help="compare open orders and running subscriptions with the gateway and fix them",
    )
    p.add_argument(
        "--since",
        type=_since,
        default=None,
        help="check unpaid orders created at or after this ISO 8601 time (default: 30 days ago)",
    )
    p = add_command(sub, "orders", _orders, help="list recent orders")
    p.add_argument(
        "--limit", type=positive_int, default=50, help="at most this many (default %(default)s)"
    )
    p.add_argument("--status", default=None, help="only orders with this status")
    p = add_command(sub, "refund", _refund, help="refund a paid order", actor=True)
    p.add_argument("order", type=uuid_arg, metavar="ORDER", help="the order's id (see orders)")
    p.add_argument("--amount", type=decimal_amount, default=None, help="e.g. 12.50 (default: all)")
    p = add_command(sub, "coupons", _coupons, help="list an organization's coupons", actor=True)
    p.add_argument("org", metavar="ORG", help="the organization's slug")
    p = add_command(
        sub, "coupon-create", _coupon_create, help="make a coupon for a product", actor=True
    )
    p.add_argument("org", metavar="ORG", help="the organization's slug")
    p.add_argument("code", metavar="CODE", help="3-40 letters, digits, - and _")
    p.add_argument("--product", required=True, help="the product's repository")
    p.add_argument("--tier", default=None, help="only this tier (its slug)")
    off = p.add_mutually_exclusive_group(required=True)
    off.add_argument("--percent", default=None, help="percent off, e.g. 25")
    off.add_argument("--amount", default=None, help="amount off in the tier's currency, e.g. 10")
    p.add_argument("--currency", default=None, help="the amount's currency (default: the tier's)")
    p.add_argument(
        "--duration",
        choices=("once", "repeating", "forever"),
        default="once",
        help="which subscription charges it discounts (default %(default)s)",
    )
    p.add_argument("--months", type=positive_int, default=None, help="for --duration repeating")
    p.add_argument("--max-redemptions", type=positive_int, default=None, help="default: no limit")
    p.add_argument("--once-per-customer", action="store_true", help="one use per customer")
    p.add_argument("--expires", type=_since, default=None, help="ISO 8601 time it stops working")
    p = add_command(
        sub, "coupon-deactivate", _coupon_deactivate, help="stop a coupon's use", actor=True
    )
    p.add_argument("org", metavar="ORG", help="the organization's slug")
    p.add_argument("coupon", type=uuid_arg, metavar="ID", help="the coupon's id (see coupons)")


def order_out(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "account": order.account.username,
        "product": order.product.repository,
        "tier": order.tier.slug,
        "kind": order.kind,
        "status": order.status,
        "total_minor": order.total_minor,
        "refunded_minor": order.refunded_minor,
        "currency": order.currency,
        "gateway": order.gateway,
        "gateway_ref": order.gateway_ref,
        "receipt_number": order.receipt_number,
        "created_at": order.created_at,
        "paid_at": order.paid_at,
    }


@command
def _sync(args: argparse.Namespace) -> int:
    """Create (idempotently) the gateway's products and prices for every active paid tier."""
    billing = _billing()
    with unit_of_work() as session:
        synced = prices.sync_all(session, billing)
        data = [
            {
                "tier_id": p.tier_id,
                "billing": p.billing,
                "amount_minor": p.amount_minor,
                "currency": p.currency,
                "gateway": p.gateway,
                "gateway_ref": p.gateway_ref,
                "created_at": p.created_at,
            }
            for p in synced
        ]
    emit(
        args,
        data,
        text=lambda d: table(
            d,
            ["tier_id", "billing", "amount_minor", "currency", "gateway_ref"],
            empty="No paid tiers.",
        ),
    )
    return 0


@command
def _sweep(args: argparse.Namespace) -> int:
    """Suspend entitlements past their grace period and expire ended subscriptions."""
    billing = _billing()
    with unit_of_work() as session:
        counts = subscriptions.expire_due(session, billing)
    emit(args, counts, text=", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def _since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@command
def _reconcile(args: argparse.Namespace) -> int:
    """Catch up with the gateway: fulfil or fail unpaid orders whose webhook never came,
    bring running subscriptions to the gateway's state; report what changed. Exit 1 when
    the gateway could not be asked about something."""
    billing = _billing()
    with unit_of_work() as session:
        report = reconcile.reconcile_all(session, billing, since=args.since)
    data = {
        "orders_checked": report.orders_checked,
        "subscriptions_checked": report.subscriptions_checked,
        "changed": report.changed,
        "errors": report.errors,
    }

    def text(d: dict[str, Any]) -> str:
        lines = [
            f"orders checked: {d['orders_checked']}, "
            f"subscriptions checked: {d['subscriptions_checked']}, changed: {len(d['changed'])}"
        ]
        for change in d["changed"]:
            what = next(k for k in ("order", "subscription", "plan_change") if k in change)
            lines.append(f"  {what} {change[what]}: {change['from']} -> {change['to']}")
        lines += [f"  error: {e}" for e in d["errors"]]
        return "\n".join(lines)

    emit(args, data, text=text)
    return 1 if report.errors else 0


@command
def _orders(args: argparse.Namespace) -> int:
    """Recent orders, newest first."""
    with unit_of_work() as session:
        stmt = select(Order).order_by(Order.created_at.desc()).limit(args.limit)
        if args.status:
            stmt = stmt.where(Order.status == args.status)
        data = [order_out(o) for o in session.scalars(stmt)]
    cols = ["id", "account", "product", "tier", "status", "total_minor", "currency", "created_at"]
    emit(args, data, text=lambda d: table(d, cols, empty="No orders."))
    return 0


@command
def _refund(args: argparse.Namespace) -> int:
    """Refund a paid order in full, or --amount of it. A full refund revokes access."""
    billing = _billing()
    with unit_of_work() as session:
        admin = resolve_actor(session, args.actor)
        order = order_service.get_order(session, args.order)
        amount = to_minor(args.amount, order.currency) if args.amount is not None else None
        order_service.refund(session, billing, actor=admin, order=order, amount_minor=amount)
        data = order_out(order)
    emit(
        args,
        data,
        text=f"Order {data['id']}: {data['status']}, "
        f"refunded {data['refunded_minor']} {data['currency']}",
    )
    return 0


def coupon_out(coupon: Coupon) -> dict[str, Any]:
    return {
        "id": coupon.id,
        "code": coupon.code,
        "product": coupon.product.repository,
        "tier": coupon.tier.slug if coupon.tier is not None else None,
        "terms": coupons.describe(coupon),
        "times_redeemed": coupon.times_redeemed,
        "max_redemptions": coupon.max_redemptions,
        "once_per_customer": coupon.once_per_customer,
        "expires_at": coupon.expires_at,
        "state": coupons.state(coupon),
    }


_COUPON_COLUMNS = ["id", "code", "product", "tier", "terms", "times_redeemed", "state"]


@command
def _coupons(args: argparse.Namespace) -> int:
    """An organization's coupons, newest first, with their redemptions and state."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        data = [coupon_out(c) for c in coupons.coupons_of(session, actor=actor, org=org)]
    emit(args, data, text=lambda d: table(d, _COUPON_COLUMNS, empty="No coupons."))
    return 0


@command
def _coupon_create(args: argparse.Namespace) -> int:
    """Make a coupon for one of the organization's products (or one tier of it). Its terms
    never change; deactivate it and make another."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        spec = coupons.CouponSpec(
            code=args.code,
            product=args.product,
            tier=args.tier,
            percent_off=args.percent,
            amount_off=args.amount,
            currency=args.currency,
            duration=args.duration,
            duration_months=args.months,
            max_redemptions=args.max_redemptions,
            once_per_customer=args.once_per_customer,
            expires_at=args.expires,
        )
        data = coupon_out(coupons.create(session, actor=actor, org=org, spec=spec))
    emit(args, data, text=f"Coupon {data['code']} ({data['id']}): {data['terms']}")
    return 0


@command
def _coupon_deactivate(args: argparse.Namespace) -> int:
    """No new checkout may use the coupon; subscriptions keep its discount for its
    duration."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        coupon = coupons.deactivate(session, actor=actor, org=org, coupon_id=args.coupon)
        data = coupon_out(coupon)
    emit(args, data, text=f"Coupon {data['code']}: {data['state']}")
    return 0
