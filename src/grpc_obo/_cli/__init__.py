"""The `grpc-obo` command: the dev authority and token tools for shells, scripts, grpcurl and curl.

    grpc-obo authority   run the dev authority; write its JSON document and per-app .env files
    grpc-obo token       get an access token for a user (dev authority, or any tenant: device code)
    grpc-obo decode      show a token's header and claims, UNVERIFIED, times as dates
    grpc-obo validate    verify a token as an API would: the Identity, or the refusal and its class

Exit codes, every verb: 0 done; 1 refused (a token `validate` refuses, a sign-in or token request
the authority refuses, a failed self-check); 2 usage (bad arguments); 3 bad input or
configuration (an unreadable or wrong file, a world file error, not a JWT, inconsistent options);
4 unavailable (the authority or its keys unreachable, no sign-in before --timeout); 130
interrupted. Nothing prints a secret, password or token unless asked: `token` prints the token it
was asked for, `authority` prints secrets only with --print-secrets (its --write-env and
--write-dotenv files hold them, mode 0600). `make demo` is the demo (examples are not installed).

Heavy imports (grpc, MSAL, the dev authority) happen inside the verbs: `decode` starts fast.
What a token says never drives the terminal: `decode`, `validate` and every error line show
control characters (C0, DEL, C1, line and paragraph separators, bidi controls) escaped
(`_terminal_safe`); --json output is escaped by JSON itself.

One module per verb (`_authority`, `_token`, `_decode`, `_validate`: its `add_parser` and its
`run`), what they share in `_common`, the parser and the dispatch in `_main`.
"""

from __future__ import annotations

# `_parser` for tests that check the arguments without running a verb.
from ._main import _parser, main

__all__ = ["_parser", "main"]
