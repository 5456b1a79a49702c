"""`python -m modelops_runtime serve ...`: parse options, run the server on uvloop."""

from __future__ import annotations

import asyncio
import logging
import sys

from modelops_runtime.serve.app import serve
from modelops_runtime.serve.config import parse_config


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop
    except ImportError:  # plain asyncio works, just slower
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
