"""Just enough IAM policy evaluation to check traced calls against a template's roles.

Template values are resolved with fixed pseudo parameters and every
resource's ``Ref``/``Fn::GetAtt`` rendered as a recognisable string (a
table's ARN names the table by its CloudFormation logical id), so a request
ARN built the same way matches exactly what the role grants. Allow and Deny,
``Action``/``NotAction``, ``Resource``/``NotResource`` with IAM wildcards and
the common condition operators are evaluated; an operator this module does
not know raises, so a policy it cannot judge never passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

__all__ = ["Grant", "PolicyEvaluator", "Request"]

PARTITION = "aws"
REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Grant:
    """One action on one resource pattern of an Allow statement."""

    sid: str
    action: str
    resource: str


class PolicyEvaluator:
    def __init__(self, template: Mapping[str, Any]) -> None:
        self._resources: Mapping[str, Any] = template["Resources"]

    # -- rendering template values ------------------------------------------------

    def table_arn(self, logical_id: str) -> str:
        return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{logical_id}"

    def resolve(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, dict) and len(value) == 1:
            ((fn, arg),) = value.items()
            if fn == "Ref":
                return str(_PSEUDO.get(arg, arg))
            if fn == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                kind = self._resources.get(name, {}).get("Type")
                if kind == "AWS::DynamoDB::Table" and attribute == "Arn":
                    return self.table_arn(name)
                return f"{name}.{attribute}"
            if fn == "Fn::Join":
                separator, parts = arg
                return str(separator).join(self.resolve(part) for part in parts)
            if fn == "Fn::Sub" and isinstance(arg, str):
                return re.sub(r"\$\{([^}]+)\}", lambda m: self.resolve({"Ref": m[1]}), arg)
        raise ValueError(f"cannot resolve {value!r}")

    # -- a role's policies --------------------------------------------------------

    def role_statements(self, role_id: str) -> list[dict[str, Any]]:
        """Inline policies of the role plus every AWS::IAM::Policy attached to it."""
        role = self._resources[role_id]
        if "ManagedPolicyArns" in role["Properties"]:
            raise ValueError(f"{role_id} has managed policies this evaluator cannot read")
        documents = [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
        for resource in self._resources.values():
            if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource[
                "Properties"
            ].get("Roles", []):
                documents.append(resource["Properties"]["PolicyDocument"])
        return [statement for document in documents for statement in _list(document["Statement"])]

    def denies(self, statements: list[dict[str, Any]], request: Request) -> bool:
        """Whether an explicit Deny matches (resource policies: Principal "*" statements)."""
        return any(s["Effect"] == "Deny" and self._matches(s, request) for s in statements)

    def allows(self, statements: list[dict[str, Any]], request: Request) -> bool:
        matching = [s for s in statements if self._matches(s, request)]
        if any(s["Effect"] == "Deny" for s in matching):
            return False
        return any(s["Effect"] == "Allow" for s in matching)

    def grants(
        self, statements: list[dict[str, Any]], prefixes: tuple[str, ...]
    ) -> Iterator[Grant]:
        """Every (action, resource) pair of the Allow statements whose action has a prefix."""
        for statement in statements:
            if statement["Effect"] != "Allow" or "Action" not in statement:
                continue
            for action in _list(statement["Action"]):
                if action.startswith(prefixes):
                    for resource in _list(statement.get("Resource", "*")):
                        yield Grant(statement.get("Sid", ""), action, self.resolve(resource))

    # -- matching -------------------------------------------------------------------

    def _matches(self, statement: Mapping[str, Any], request: Request) -> bool:
        if "Action" in statement:
            hit = any(_wild(a, request.action, True) for a in _list(statement["Action"]))
        else:
            hit = not any(_wild(a, request.action, True) for a in _list(statement["NotAction"]))
        if not hit:
            return False
        if "Resource" in statement:
            resources = [self.resolve(r) for r in _list(statement["Resource"])]
            hit = any(_wild(r, request.resource) for r in resources)
        else:
            resources = [self.resolve(r) for r in _list(statement["NotResource"])]
            hit = not any(_wild(r, request.resource) for r in resources)
        return hit and self._conditions_hold(statement.get("Condition", {}), request)

    def _conditions_hold(self, conditions: Mapping[str, Any], request: Request) -> bool:
        for operator, tests in conditions.items():
            for key, expected in tests.items():
                values = [self.resolve(v) for v in _list(expected)]
                if not _condition(operator, request.context.get(key), values):
                    return False
        return True


_PSEUDO = {
    "AWS::Partition": PARTITION,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
}


def _condition(operator: str, actual: str | None, expected: list[str]) -> bool:
    if operator == "Null":
        return (actual is None) == (expected == ["true"])
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if actual is None:
        # A missing key fails every positive test and passes every negated one.
        return if_exists or "Not" in base
    if base in ("StringEquals", "ArnEquals"):
        return actual in expected
    if base in ("StringLike", "ArnLike"):
        return any(_wild(e, actual) for e in expected)
    if base in ("StringNotEquals", "ArnNotEquals"):
        return actual not in expected
    if base in ("StringNotLike", "ArnNotLike"):
        return not any(_wild(e, actual) for e in expected)
    if base == "StringEqualsIgnoreCase":
        return actual.lower() in [e.lower() for e in expected]
    if base == "Bool":
        return actual.lower() in [e.lower() for e in expected]
    numeric = {
        "NumericEquals": float.__eq__,
        "NumericLessThan": float.__lt__,
        "NumericLessThanEquals": float.__le__,
        "NumericGreaterThan": float.__gt__,
        "NumericGreaterThanEquals": float.__ge__,
    }
    if base in numeric:
        return any(numeric[base](float(actual), float(e)) for e in expected)
    raise ValueError(f"condition operator {operator} is not understood here")


def _wild(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcards: * any run (also across ':' and '/'), ? one character; no [] classes."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatchcase(value, pattern.replace("[", "[[]"))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
