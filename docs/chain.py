"""A chain of APIs with grpc_obo and no .proto file (README, "Your own world").

    python chain.py serve NAME PORT SCOPE [NEXT=HOST:PORT]   # one API, configured by its env file
    python chain.py call HOST:PORT                           # as the user whose token is in $TOKEN

Each API validates its caller's token, requires SCOPE, answers who called, and (with NEXT) calls
the next API On-Behalf-Of the same user. Requests and replies are raw bytes.
"""

import asyncio
import os
import signal
import sys

import grpc

import grpc_obo

METHOD = "/chain.Hop/Who"


async def serve(name: str, port: int, scope: str, next_hop: str | None) -> None:
    options = grpc_obo.ValidatorOptions.from_env()  # AZURE_TENANT_ID, AZURE_CLIENT_ID, ...
    client = grpc_obo.ConfidentialClient.from_env()  # ... and AZURE_CLIENT_SECRET
    async with grpc_obo.TokenValidator(options) as validator, grpc_obo.OnBehalfOf(client) as obo:
        call_next = None
        if next_hop:
            api, target = next_hop.split("=")
            scopes = os.environ[f"GRPC_OBO_SCOPES_{api.upper()}"].split()
            call_next = obo.channel(target, scopes=scopes).unary_unary(METHOD)

        async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            me = grpc_obo.current_identity()  # verified by the interceptor, for this call only
            line = f"{name}: {me.username} {me.principal} via {me.client_id}"
            if call_next is not None:  # a token for the next API, for the same user
                line += "\n" + (await call_next(b"")).decode()
            return line.encode()

        policy = grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes={scope}))
        server = grpc.aio.server(
            interceptors=[grpc_obo.server_interceptor(validator, policy=policy)]
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "chain.Hop", {"Who": grpc.unary_unary_rpc_method_handler(who)}
                )
            ]
        )
        server.add_insecure_port(f"127.0.0.1:{port}")  # loopback: use TLS anywhere else
        await validator.start()  # no signing keys: fail now, not on the first call
        await server.start()
        print(f"{name} serving on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(5)  # before the exchanger and the validator close


async def call(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await channel.unary_unary(METHOD)(
            b"", metadata=[("authorization", f"Bearer {os.environ['TOKEN']}")], timeout=10
        )
    print(reply.decode())


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], (sys.argv[5:] or [None])[0]))
    else:
        asyncio.run(call(sys.argv[2]))
