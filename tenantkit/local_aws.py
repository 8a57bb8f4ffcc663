"""A local Secrets Manager (moto's server on 127.0.0.1) for tenantctl's local mode.

While it runs, every AWS endpoint of this process points at it, with throwaway credentials, so
the provisioner's boto3 calls are the same calls as in AWS and nothing can reach a real account.
"""

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

LOCAL_REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_aws() -> Iterator[str]:
    """Run a moto server and point this process's AWS SDK at it; yields its URL."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    overrides = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "tenantkit-local",
        "AWS_SECRET_ACCESS_KEY": "tenantkit-local",
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_PROFILE": None,
        "AWS_SESSION_TOKEN": None,
    }
    saved = {key: os.environ.get(key) for key in overrides}
    for key, value in overrides.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
