"""An upstream for the big-answer benchmark: GET /page answers a 4 MiB HTML page.

python -m tests.bench.page_upstream --port 8082 [--size 4194304]
"""

from __future__ import annotations

import argparse

from aiohttp import web

from tests.pages import html_page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=4 * 1024 * 1024)
    args = parser.parse_args()
    body = html_page(args.size).encode()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/page", page)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
