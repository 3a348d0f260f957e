"""Everything that talks to AWS (EC2, IAM, CloudWatch Logs), and only this package.

boto3 is blocking and untyped, so it is kept behind this boundary (import-linter
enforces it): every call runs off the event loop with ``asyncio.to_thread``, every
client has explicit botocore retries and timeouts (``session``), and AWS failures leave
as vk-fargate errors (``problems``), never as ``botocore`` exceptions.

``network`` checks profile subnets and manages one ENI per pod; ``iam`` checks the pod
execution role and ``aws-auth``; ``logging`` validates ``aws-observability/aws-logging``
and ships container logs to CloudWatch Logs; ``devaws`` runs moto's server for
``vk-fargate dev up --aws`` and the tests.
"""
