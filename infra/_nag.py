"""One call for a cdk-nag v3 acknowledgment, so each reads as rule + reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

__all__ = ["acknowledge", "nag_token_text"]


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge ``rule`` (``AwsSolutions-APIG4``, ``AwsSolutions-IAM5[...]``) on ``scope``.

    The id carries the plugin prefix the validation report asks for
    (``AwsSolutions::AwsSolutions-APIG4``); without one, CDK would file it
    as a construct-annotation acknowledgment that cdk-nag honours only for
    backwards compatibility.
    """
    pack = rule.split("-", 1)[0]
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{pack}::{rule}", reason=reason))


def nag_token_text(scope: IConstruct, value: str) -> str:
    """``value`` as cdk-nag spells it in a finding id: ``Ref``/``GetAtt`` as ``<Name>``.

    IAM5 finding ids quote the offending resource, with tokens rendered the
    way cdk-nag renders them, so an acknowledgment must spell it the same.
    """
    return _render(Stack.of(scope).resolve(value))


def _render(node: object) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{'.'.join(arg)}>"
        if fn == "Fn::Join":
            sep, parts = arg
            return str(sep).join(_render(part) for part in parts)
    raise ValueError(f"cannot render {node!r} as cdk-nag does")
