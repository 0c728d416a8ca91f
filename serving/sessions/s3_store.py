"""Sessions of one region in an S3 bucket (production): one object per session.

The object ``sessions/<user_id>`` holds a one-line JSON header (user, version, frozen flag,
checksum) followed by the session's bytes, so that every change of state changes the object's
content and therefore its ETag. Compare-and-set is an S3 conditional write: ``If-Match`` on the
ETag that was read (``If-None-Match: *`` to create), and a conditional delete.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from serving.sessions.state import SessionError, SessionState
from serving.sessions.store import CasSessionStore

PREFIX = "sessions/"
# A lost race answers 412 (the ETag moved on) or 409 (a concurrent conditional write);
# a conditional delete of an object that is already gone answers 404.
LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412"}


class S3SessionStore(CasSessionStore):
    """The sessions of one region in one S3 bucket."""

    def __init__(
        self,
        bucket: str,
        region: str,
        *,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.bucket = bucket
        self.region = region
        config = Config(retries={"mode": "standard", "max_attempts": 5})
        self._s3 = (session or boto3.session.Session()).client(
            "s3", endpoint_url=endpoint_url, config=config
        )

    def close(self) -> None:
        """Close the client's connections."""
        self._s3.close()

    def _load(self, user_id: str) -> tuple[SessionState, str] | None:
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=PREFIX + user_id)
        except ClientError as error:
            if _code(error) in {"NoSuchKey", "404"}:
                return None
            raise
        return _decode(user_id, answer["Body"].read()), answer["ETag"]

    def _swap(self, user_id: str, token: str | None, new: SessionState | None) -> bool:
        key = PREFIX + user_id
        try:
            if new is None:
                if token is not None:
                    self._s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=token)
            elif token is None:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=_encode(new), IfNoneMatch="*")
            else:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=_encode(new), IfMatch=token)
        except ClientError as error:
            if _code(error) in LOST_RACE:
                return False
            raise
        return True

    def _users(self) -> list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=PREFIX
        )
        return [item["Key"][len(PREFIX) :] for page in pages for item in page.get("Contents", [])]


def _encode(state: SessionState) -> bytes:
    header = {
        "user_id": state.user_id,
        "version": state.version,
        "frozen": state.frozen,
        "checksum": state.checksum,
    }
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + state.data


def _decode(user_id: str, body: bytes) -> SessionState:
    line, _, data = body.partition(b"\n")
    try:
        header: dict[str, Any] = json.loads(line)
        return SessionState.of(user_id, data, int(header["version"]), bool(header["frozen"]))
    except (ValueError, KeyError, TypeError) as error:
        raise SessionError(f"{PREFIX}{user_id} is not a prewarm session: {error}") from None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
