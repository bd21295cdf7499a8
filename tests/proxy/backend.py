"""A real target server for proxy tests: Starlette on uvicorn, run as its own process.

It is a different HTTP implementation from the proxy's (uvicorn + h11), so a test passes
only if the two agree on the wire. Endpoints:

    /echo/...        JSON: method, path (raw, with query), headers, body size, server name
    /download/<n>    n bytes of b"x", streamed in 1 MiB chunks, no Content-Length (chunked)
    /upload          reads the body as a stream; JSON: size and sha256
    /slow/<seconds>  answers after a delay
    /status/<code>   answers with that status
    /ws              WebSocket echo (text and bytes)

Usage: python backend.py PORT [NAME]
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

NAME = sys.argv[2] if len(sys.argv) > 2 else "backend"


async def echo(request: Request) -> Response:
    body = await request.body()
    raw_path = request.scope["raw_path"].decode()
    query = request.scope["query_string"].decode()
    return JSONResponse(
        {
            "server": NAME,
            "method": request.method,
            "path": raw_path + (f"?{query}" if query else ""),
            "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
            "body_size": len(body),
        }
    )


async def download(request: Request) -> Response:
    size = int(request.path_params["size"])
    chunk = b"x" * (1 << 20)

    async def body():  # type: ignore[no-untyped-def]
        left = size
        while left > 0:
            piece = chunk if left >= len(chunk) else chunk[:left]
            left -= len(piece)
            yield piece

    return StreamingResponse(body(), media_type="application/octet-stream")


async def upload(request: Request) -> Response:
    digest = hashlib.sha256()
    size = 0
    async for piece in request.stream():
        digest.update(piece)
        size += len(piece)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.path_params["seconds"]))
    return Response(b"slow done", media_type="text/plain")


async def status(request: Request) -> Response:
    return Response(b"status body", status_code=int(request.path_params["code"]))


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/download/{size:int}", download),
        Route("/upload", upload, methods=["POST", "PUT"]),
        Route("/slow/{seconds}", slow),
        Route("/status/{code:int}", status),
        WebSocketRoute("/ws", ws_echo),
        Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", http="h11",
        ws="websockets",
    )
