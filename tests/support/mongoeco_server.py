"""A MongoDB wire-protocol server for the tests: mongoeco on 127.0.0.1, data in a file.

Run with the Python 3.13 environment that has mongoeco[wire] (.ci/run makes .venv-mongo):
    python tests/support/mongoeco_server.py PORT DATA_FILE
It prints "ready" once it accepts connections and serves until killed. The data lives in
an SQLite file, so a server stopped and started again on the same file keeps it.
"""

import asyncio
import sys

from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer


async def serve(port: int, path: str) -> None:
    server = AsyncMongoEcoProxyServer(engine=SQLiteEngine(path), host="127.0.0.1", port=port)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
