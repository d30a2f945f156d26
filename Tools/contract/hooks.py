"""Schemathesis hooks for Lodestone's client API (Tools/contract/run.sh).

Two keep the test on this machine and bounded: a peer the node is told to
dial is always on loopback, and a sync that waits waits one second at most.
SQL scripts (`application/sql` bodies of exec) are sent as UTF-8 text, and
backup files (restore's `application/vnd.sqlite3`) as bytes.
Both change only requests the document calls valid (a request that is not
stays as generated, to be refused). One check holds the remote API to the
roles: with LODE_CONTRACT_ROLE set, every operation the role may not do is
answered 403, and every one it may do is not.
"""

import os
import re

import schemathesis

# The document's pattern for HOST:PORT.
ADDRESS = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
)


@schemathesis.serializer("application/sql")
def sql_serializer(ctx, value):
    """An SQL script body: text as UTF-8, bytes as they are."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


@schemathesis.serializer("application/vnd.sqlite3")
def sqlite_serializer(ctx, value):
    """A backup file body (restore): bytes as they are, text as UTF-8."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _is(context, method, path):
    op = context.operation
    return op is not None and op.method.upper() == method and op.path == path


@schemathesis.hook
def map_body(context, body):
    if not isinstance(body, dict):
        return body
    if _is(context, "POST", "/v1/peers"):
        address = body.get("address")
        if isinstance(address, str) and ADDRESS.match(address):
            body = dict(body, address="127.0.0.1:" + address.rsplit(":", 1)[1])
    elif _is(context, "POST", "/v1/sync"):
        timeout = body.get("timeout")
        if timeout is None:
            timeout = 60  # the default, when absent or null
        valid_timeout = isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 <= timeout <= 86400
        if body.get("wait") is True and valid_timeout:
            body = dict(body, timeout=min(timeout, 1))
    return body


ROLE = os.environ.get("LODE_CONTRACT_ROLE")

# What each operation needs beyond reading (Sources/LodeNode/API: `needs:`).
NEEDS = {
    ("POST", "/v1/datasets"): "edit",
    ("POST", "/v1/datasets/{ds}/alter"): "edit",
    ("POST", "/v1/datasets/{ds}/exec"): "edit",
    ("POST", "/v1/datasets/{ds}/tables/{table}/import"): "edit",
    ("POST", "/v1/datasets/{ds}/annotations"): "annotate",
    ("POST", "/v1/peers"): "operate",
    ("DELETE", "/v1/peers/{address}"): "operate",
    ("POST", "/v1/sync"): "operate",
    ("POST", "/v1/revocations"): "operate",
    ("POST", "/v1/restore"): "operate",
    ("POST", "/v1/datasets/{ds}/annotations/{id}/status"): "annotate",
    ("POST", "/v1/datasets/{ds}/conflicts/resolve"): "edit",
    ("POST", "/v1/datasets/{ds}/checkpoints"): "edit",
    ("POST", "/v1/datasets/{ds}/compact"): "operate",
    ("GET", "/v1/people"): "operate",
    ("POST", "/v1/people"): "operate",
    ("DELETE", "/v1/people/{name}"): "operate",
    ("POST", "/v1/signin-links"): "operate",
}


def _allowed(role, need):
    if need is None:
        return True
    if need == "annotate":
        return role in ("editor", "annotator")
    return role == "editor"


@schemathesis.check
def role_is_enforced(ctx, response, case):
    """Over mutual TLS, a role is refused exactly what it may not do."""
    if not ROLE:
        return None
    key = (case.operation.method.upper(), case.operation.path)
    if response.request.method.upper() != key[0]:
        return None  # a method the path does not have: 405, whoever asks
    if _allowed(ROLE, NEEDS.get(key)):
        if response.status_code == 403:
            raise AssertionError(f"a {ROLE} was refused {key[0]} {key[1]}, which its role allows")
    elif response.status_code != 403:
        raise AssertionError(f"a {ROLE} got {response.status_code} for {key[0]} {key[1]}, which its role does not allow (expected 403)")
    return None
