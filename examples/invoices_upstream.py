"""A small invoices HTTP API for trying the broker (`make run`) and for benchmarks.

    python examples/invoices_upstream.py --port 8081

GET /invoices[?supplier=&status=], GET /invoices/{id}, POST /invoices/{id}/pay {"amount": "..."}.
With INVOICES_API_KEY set, every request must carry ``Authorization: Bearer <that key>``: the
broker injects it from its secret store; agents never see it. State lives in memory: this is an
example upstream, not part of the broker.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
from decimal import Decimal, InvalidOperation

from aiohttp import web
from aiohttp.typedefs import Handler

INVOICES = {
    "INV-0001": {"supplier": "ACME Paper", "amount": "1200.00", "status": "open"},
    "INV-0002": {"supplier": "Globex Cloud", "amount": "4999.99", "status": "open"},
    "INV-0003": {"supplier": "ACME Paper", "amount": "310.50", "status": "paid"},
}


def make_app(api_key: str | None = None) -> web.Application:
    invoices = {key: dict(value) for key, value in INVOICES.items()}

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        sent = request.headers.get("Authorization", "")
        if api_key and not hmac.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
            return web.json_response({"error": "missing or wrong API key"}, status=401)
        return await handler(request)

    async def list_invoices(request: web.Request) -> web.Response:
        supplier = request.query.get("supplier")
        status = request.query.get("status")
        found = [
            {"id": key, **value}
            for key, value in invoices.items()
            if (supplier is None or value["supplier"] == supplier)
            and (status is None or value["status"] == status)
        ]
        return web.json_response({"invoices": found})

    async def get_invoice(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        if key not in invoices:
            return web.json_response({"error": f"no invoice {key}"}, status=404)
        return web.json_response({"id": key, **invoices[key]})

    async def pay_invoice(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        if key not in invoices:
            return web.json_response({"error": f"no invoice {key}"}, status=404)
        try:
            amount = Decimal(json.loads(await request.text())["amount"])
        except (ValueError, KeyError, TypeError, InvalidOperation):
            return web.json_response({"error": "amount missing"}, status=400)
        invoice = invoices[key]
        if invoice["status"] == "paid":
            return web.json_response({"error": f"{key} is already paid"}, status=409)
        if amount != Decimal(invoice["amount"]):
            return web.json_response({"error": "amount does not match the invoice"}, status=422)
        invoice["status"] = "paid"
        return web.json_response({"id": key, **invoice})

    app = web.Application(middlewares=[require_key])
    app.add_routes(
        [
            web.get("/invoices", list_invoices),
            web.get("/invoices/{id}", get_invoice),
            web.post("/invoices/{id}/pay", pay_invoice),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    app = make_app(os.environ.get("INVOICES_API_KEY"))
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
