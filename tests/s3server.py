"""A throwaway S3 server for tests and benchmarks: moto's server in a child process."""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import boto3

REGION = "us-east-1"
BUCKET = "relay-archive"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


class S3ServerError(RuntimeError):
    """moto's server could not be started; the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """`python -m moto.server` on 127.0.0.1, in its own process (its memory is not the
    caller's: the benchmark measures the relay's). Once started, it checks signatures and
    IAM policies: one user whose key may do anything in S3, and one empty bucket."""

    def __init__(self) -> None:
        self.port = 0
        self.access_key = ""
        self.secret_key = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS variables a client of this server reads."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
        }

    def client(self, service: str = "s3", **creds: str) -> Any:
        """A boto3 client of this server (the user's key unless others are given)."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=creds.get("key", self.access_key or "setup"),
            aws_secret_access_key=creds.get("secret", self.secret_key or "setup"),
        )

    def start(self, timeout: float = 30) -> None:
        """Start it, wait until it answers, create the user and the bucket, then turn on auth."""
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        self._proc = subprocess.Popen(  # noqa: S603 (our interpreter, fixed arguments)
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self._wait(timeout)
            self._setup()
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise S3ServerError(f"moto.server exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):  # noqa: S310
                    return
            except urllib.error.HTTPError:
                return  # an answer of any kind: it is listening
            except OSError:
                if time.monotonic() > deadline:
                    raise S3ServerError(f"moto.server did not answer within {timeout}s") from None
                time.sleep(0.05)

    def _setup(self) -> None:
        iam = self.client("iam")
        iam.create_user(UserName="relay")
        key = iam.create_access_key(UserName="relay")["AccessKey"]
        iam.put_user_policy(UserName="relay", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.client().create_bucket(Bucket=BUCKET)
        self.require_auth(True)

    def require_auth(self, on: bool) -> None:
        """Check every request's signature and policy, or none. moto checks only signatures in
        an Authorization header: a presigned URL's GET needs auth off (it answers 500 else)."""
        request = urllib.request.Request(  # noqa: S310
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0" if on else b"inf",
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would be parsed away
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def fake_secret(self) -> str:
        """A secret key that is not this server's: requests signed with it are refused."""
        return secrets.token_urlsafe(30)
