"""One fake AWS for the session: moto's server on loopback, emptied before every test.

The tests reach it as the provider reaches AWS, over HTTP at an endpoint URL, with one set
of boto3 clients for the session (loading a service model costs more than most tests).
Each test starts from an empty account: ``POST /moto-api/reset`` before it, as
``mock_aws`` gave each test before. A reset, rather than names or a region per test,
because the tests assert on whole-account views (every ENI, every log group) and IAM has
no region; they run one at a time (no xdist), so nothing else sees the reset.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from vk_fargate.aws import session

REGION = "eu-central-1"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's server in a thread of this process, on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def empty_account(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto builds a region's EC2 anew after a reset, loading thousands of default AMIs
    # unless told not to (0.1-0.3 s a test); no test here uses an AMI. The variable is
    # read in the server's thread while the test runs, and is gone after it.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="session")
def clients(moto_url: str) -> Iterator[session.Clients]:
    """EC2, IAM and CloudWatch Logs clients of the fake account, in ``REGION``.

    Fixed fake credentials, and no ``AWS_PROFILE`` while they are made: a developer's own
    AWS configuration must neither break the tests nor be used by them.
    """
    aws = session.AwsSettings(region=REGION, endpoint_url=moto_url)

    def make(service: session.Service) -> session.Client:
        return session.make_client(aws, service, credentials=("testing", "testing"))

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AWS_PROFILE", raising=False)
        made = session.Clients(ec2=make("ec2"), iam=make("iam"), logs=make("logs"))
    yield made
    for client in (made.ec2, made.iam, made.logs):
        client.close()
