"""The local stack: API Gateway's behaviour on 127.0.0.1, moto for AWS services.

It replaces only the AWS-managed edges; the Lambda handlers it runs are the
ones that deploy, unchanged.
"""
