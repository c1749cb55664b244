"""The S3 witness: each signed checkpoint becomes one object in an S3-compatible bucket (AWS
S3, MinIO, ...), ``<prefix><broker_id>/<seq>-<ts_ms>-<kind>.json``, never overwritten. With
``lock_days``, each object is put under object lock (the bucket must have it enabled) for that
many days, so not even the bucket's owner can delete it before then.

Credentials come the way boto3 finds them (environment variables AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a profile, an instance role); none is in broker.yaml. Loaded only when a
broker is configured with an s3 witness (boto3 is slow to import).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from broker.audit.checkpoints import Checkpoint
from broker.audit.witnesses import WitnessError

READ_LATEST = 100  # the newest checkpoints verify reads back
TIMEOUT_S = 10


class S3Witness:
    """Keeps checkpoints as objects in ``bucket`` (settings: bucket, prefix, endpoint_url,
    region, lock_days, lock_mode)."""

    def __init__(self, config: dict[str, Any], broker_id: str) -> None:
        self.bucket = str(config["bucket"])
        self.prefix = f"{config.get('prefix') or 'toolbroker/'}{broker_id}/"
        self.name = f"s3://{self.bucket}/{self.prefix}"
        self._lock_days = int(config.get("lock_days") or 0)
        self._lock_mode = str(config.get("lock_mode") or "COMPLIANCE")
        # a session of its own: the credentials are looked up now, from the environment
        # as it is (boto3's default session keeps the first ones it found, for good)
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.get("endpoint_url"),
            region_name=config.get("region") or "us-east-1",
            config=botocore.config.Config(
                connect_timeout=TIMEOUT_S,
                read_timeout=TIMEOUT_S,
                retries={"max_attempts": 1},  # the poster retries, with its own backoff
            ),
        )

    def post(self, mark: Checkpoint) -> None:
        extra: dict[str, Any] = {}
        if self._lock_days:
            until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=self._lock_days)
            extra = {"ObjectLockMode": self._lock_mode, "ObjectLockRetainUntilDate": until}
        key = f"{self.prefix}{mark.seq:015d}-{mark.ts_ms}-{mark.kind}.json"
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=mark.line().encode(),
                ContentType="application/json",
                **extra,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise WitnessError(f"{self.name}: {exc}") from None

    def read(self) -> list[Checkpoint]:
        try:
            keys = [
                item["Key"]
                for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix
                )
                for item in page.get("Contents", [])
            ]
            marks = []
            for key in sorted(keys)[-READ_LATEST:]:  # zero-padded seq: sorted is chain order
                body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                marks.append(Checkpoint.from_json(json.loads(body)))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise WitnessError(f"{self.name}: {exc}") from None
        except ValueError as exc:
            raise WitnessError(
                f"{self.name} holds an object that is not a checkpoint: {exc}"
            ) from None
        return marks
